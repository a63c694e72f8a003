"""``smokeseg data check``: decode every image and mask once, before a run that would fail half-way.

Problems are collected, not raised, so one pass lists every file to fix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table

from smokeseg.config.schema import ExperimentConfig, RunTable
from smokeseg.data.formats import Sample, collect_samples, parallel_map
from smokeseg.data.images import image_size
from smokeseg.data.rle import decodes_more_plausibly_in
from smokeseg.errors import DataError

# Masks probed for a mismatched rle_order: enough to out-vote a few odd shapes, cheap to decode twice.
_ORDER_PROBE_SIZE = 16
_PROBLEMS_RENDERED = 20
_COMMON_SIZES_SHOWN = 3


@dataclass
class SplitReport:
    """What one table or folder holds, and what is wrong with it."""

    name: str
    source: str
    images: int = 0
    labelled: int = 0
    empty_masks: int = 0
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (width, height) -> images
    smoke_fractions: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    order_probes: int = 0  # RLE masks decoded in both orders to test dataset.rle_order
    other_order_votes: int = 0  # of those, how many look like shapes only in the other order

    @property
    def mean_smoke_fraction(self) -> float | None:
        return sum(self.smoke_fractions) / len(self.smoke_fractions) if self.smoke_fractions else None


@dataclass
class DatasetReport:
    splits: list[SplitReport]
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{split.name}: {problem}" for split in self.splits for problem in split.problems]


@dataclass(frozen=True)
class _Decoded:
    """What a sample that decoded adds to the report; ``_decode`` returns the problem of one that did not."""

    size: tuple[int, int]  # (width, height)
    smoke_fraction: float | None = None
    order_probed: bool = False
    better_order: str | None = None


def check_dataset(config: ExperimentConfig) -> DatasetReport:
    """Decode every image and mask of each table a run reads (``DatasetConfig.run_tables``: train, custom
    validation, extra frames, test); count, measure, and list each problem by file. A table the config
    needs but does not name is the ConfigError training would raise."""
    report = DatasetReport([])
    for table in config.dataset.run_tables():
        split = _check_split(table)
        report.splits.append(split)
        # Each table on its own: a row-major table must not hide behind a column-major one.
        note = order_mismatch(
            split.source,
            table.settings.rle_order,
            split.order_probes,
            split.other_order_votes,
            table.rle_order_setting,
        )
        if note:
            report.notes.append(note)
    return report


def order_mismatch(table: str, order: str, probes: int, votes: int, setting: str) -> str | None:
    """The fix, when most probed masks of one table look like shapes only in the other order."""
    if not probes or votes <= probes / 2:
        return None
    other = "C" if order == "F" else "F"
    return (
        f"{table}: RLE order is {order} but {votes} of {probes} masks decode far more plausibly as "
        f"{other} (stripes instead of shapes); set {setting}: {other}"
    )


def check_rle_order(samples: Sequence[Sample], table: str | Path, setting: str) -> None:
    """Refuse to train on masks scrambled by the wrong RLE order: probe a few, from image headers only."""
    probed = [sample for sample in samples if sample.rles][:_ORDER_PROBE_SIZE]
    votes = [vote for vote in parallel_map(_other_order_vote, probed) if vote is not None]
    order = probed[0].rle_order if probed else "F"
    problem = order_mismatch(str(table), order, len(votes), sum(votes), setting)
    if problem:
        raise DataError(f"{problem}.")


def _other_order_vote(sample: Sample) -> bool | None:
    """Whether the mask looks like a shape only in the other order; None for a sample that cannot be
    read, which training reports (or skips) by ``dataset.on_bad_sample`` as it reaches it."""
    try:
        height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
        return decodes_more_plausibly_in(sample.rles, height, width, sample.rle_order) is not None
    except DataError:
        return None


def _check_split(table: RunTable) -> SplitReport:
    split = SplitReport(name=table.name, source=str(table.table))
    try:
        samples, split.problems = collect_samples(
            table.table, table.data_folder, table.settings, table.labelled
        )
    except DataError as error:
        split.problems.append(str(error))
        return split
    probes = {id(sample) for sample in [s for s in samples if s.rles][:_ORDER_PROBE_SIZE]}
    results = parallel_map(lambda sample: _decode(sample, id(sample) in probes), samples)
    for result in results:
        if isinstance(result, str):
            split.problems.append(result)
            continue
        split.images += 1
        split.sizes[result.size] += 1
        if result.smoke_fraction is not None:
            split.labelled += 1
            split.empty_masks += result.smoke_fraction == 0
            split.smoke_fractions.append(result.smoke_fraction)
        split.order_probes += result.order_probed
        split.other_order_votes += result.better_order is not None
    return split


def _decode(sample: Sample, probe_order: bool) -> _Decoded | str:
    try:
        image = sample.load_image()
        height, width = image.shape[:2]
        mask = sample.load_mask(height, width)
        better = (
            decodes_more_plausibly_in(sample.rles, height, width, sample.rle_order) if probe_order else None
        )
    except DataError as error:
        return str(error)
    return _Decoded(
        size=(width, height),
        smoke_fraction=None if mask is None else float(mask.mean()),
        order_probed=probe_order,
        better_order=better,
    )


def render_report(report: DatasetReport) -> RenderableType:
    """A summary table per split, then the problems (the first few) and notes, for the terminal."""
    summary = Table(title="Dataset check")
    summary.add_column("")
    for split in report.splits:
        summary.add_column(split.name, overflow="fold")
    rows = {
        "source": lambda s: s.source,
        "images": lambda s: str(s.images),
        "with masks": lambda s: str(s.labelled),
        "empty masks": lambda s: str(s.empty_masks),
        "mean smoke fraction": lambda s: (
            "-" if s.mean_smoke_fraction is None else f"{s.mean_smoke_fraction:.4f}"
        ),
        "size range": _size_range,
        "common sizes": _common_sizes,
        "problems": lambda s: f"[red]{len(s.problems)}[/red]" if s.problems else "0",
    }
    for label, cell in rows.items():
        summary.add_row(label, *(cell(split) for split in report.splits))
    parts: list[RenderableType] = [summary]
    problems = report.problems
    if problems:
        listing = Table(title=f"Problems ({len(problems)})", show_header=False)
        listing.add_column(overflow="fold")
        for problem in problems[:_PROBLEMS_RENDERED]:
            listing.add_row(problem)
        if len(problems) > _PROBLEMS_RENDERED:
            listing.add_row(f"... and {len(problems) - _PROBLEMS_RENDERED} more")
        parts.append(listing)
    parts.extend(f"[yellow]{note}[/yellow]" for note in report.notes)
    return Group(*parts)


def _size_range(split: SplitReport) -> str:
    if not split.sizes:
        return "-"
    areas = sorted(split.sizes, key=lambda size: size[0] * size[1])
    return f"{_size(areas[0])} .. {_size(areas[-1])}"


def _common_sizes(split: SplitReport) -> str:
    return (
        ", ".join(f"{_size(size)} x{count}" for size, count in split.sizes.most_common(_COMMON_SIZES_SHOWN))
        or "-"
    )


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
