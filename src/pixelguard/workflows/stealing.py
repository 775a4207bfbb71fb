"""``steal``: extract a surrogate by queries, measure it, attack the victim through it.

The job behind ``pixelguard steal``: split off held-out images, run an extraction
(:mod:`pixelguard.leakage.extraction`) within a hard query budget with a resumable
checkpoint, then (optionally) transfer white-box attacks from the surrogate to the
victim and warm-start sparse-rs from them (:mod:`pixelguard.leakage.transfer`).
It writes the surrogate as a pixelguard checkpoint, ``steal.json`` and a
self-contained ``report.html`` beside it. Every transfer figure is labelled as such.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelguard.attacks.base import Attack
from pixelguard.attacks.sparse_rs import SparseRS
from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.files import replaced_atomically, write_json, write_text
from pixelguard.leakage.extraction import (
    ExtractionProgress,
    ExtractionResult,
    Holdout,
    JacobianAugmentation,
    KnockoffNets,
    make_holdout,
)
from pixelguard.leakage.transfer import (
    TransferResult,
    WarmStartComparison,
    transfer_attack,
    warm_start_sparse_rs,
)
from pixelguard.models.base import Classifier
from pixelguard.report.html import figure, join, page, section, table, tag, tile
from pixelguard.report.svg import PALETTE, Axis, Series, line_chart, log_ticks, percent_axis

logger = logging.getLogger(__name__)

REPORT_VERSION = 1


def checkpoint_path(out: str | Path) -> Path:
    """The answers checkpoint beside the surrogate: ``surrogate.pt`` -> ``surrogate.queries.npz``."""
    out = Path(out)
    return out.with_name(out.stem + ".queries.npz")


@dataclass(frozen=True)
class StealReport:
    """What a steal run found: the extraction, its measurement, the transfer attacks."""

    extraction: ExtractionResult
    holdout: Holdout
    holdout_source: str
    transfers: list[TransferResult]
    warm_start: WarmStartComparison | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``steal.json``; transfer figures sit under ``transfer``."""
        last = self.extraction.curve[-1] if self.extraction.curve else None
        return {
            "report": "steal",
            "version": REPORT_VERSION,
            "extraction": self.extraction.to_dict(),
            "holdout": {
                "source": self.holdout_source,
                "n_images": int(self.holdout.x.shape[0]),
                "victim_queries": self.holdout.queries,
                "note": "victim queries to measure agreement; outside the extraction budget",
            },
            "agreement": None if last is None else last.agreement,
            "accuracy": None if last is None else last.accuracy,
            "transfer": {
                "note": "every figure here is a transfer attack: computed on the surrogate, "
                "submitted to the victim and verified by its answers",
                "attacks": [t.to_dict() for t in self.transfers],
                "sparse_rs_warm_start": None
                if self.warm_start is None
                else self.warm_start.to_dict(),
            },
        }


def split_holdout(
    query_data: Dataset, held_out: Dataset | None, fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    """The query pool and the held-out images: ``held_out`` if given, else a seeded split.

    Raises:
        ConfigError: a fraction outside (0, 1) or too few images to split.
        ShapeError: held-out images of another shape than the query data.
    """
    if held_out is not None:
        if held_out.image_shape != query_data.image_shape:
            raise ShapeError(
                f"held-out images have shape {held_out.image_shape}, "
                f"query images {query_data.image_shape}"
            )
        return query_data, held_out
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    n = len(query_data)
    n_held = int(round(n * fraction))
    if n_held < 1 or n_held >= n:
        raise ConfigError(f"cannot hold out {fraction:.0%} of {n} query images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return query_data.subset(order[n_held:]), query_data.subset(order[:n_held])


def check_victim_fits(victim: Classifier, data: Dataset, what: str) -> None:
    """ShapeError unless ``data`` holds images of the victim's input shape."""
    if tuple(data.image_shape) != tuple(victim.input_shape):
        raise ShapeError(
            f"{what} have shape {tuple(data.image_shape)} but the model expects "
            f"{tuple(victim.input_shape)}"
        )


def steal(
    victim: Classifier,
    query_data: Dataset,
    extraction: KnockoffNets | JacobianAugmentation,
    *,
    held_out: Dataset | None = None,
    holdout_fraction: float = 0.2,
    attacks: Sequence[Attack] = (),
    warm_start: SparseRS | None = None,
    transfer_images: int = 100,
    checkpoint: str | Path | None = None,
    progress: ExtractionProgress | None = None,
    seed: int = 0,
) -> StealReport:
    """Steal ``victim`` from ``query_data``, measure it, and transfer ``attacks`` through it.

    Args:
        victim: the model to steal (any Classifier, e.g. a remote endpoint).
        query_data: the attacker's images (the pool; the labels are not used).
        extraction: the configured strategy, its ``budget`` the hard query limit.
        held_out: images to measure agreement/accuracy on; default a seeded
            ``holdout_fraction`` of ``query_data``, never queried for extraction.
        attacks: white-box attacks run on the surrogate and submitted to the victim.
        warm_start: sparse-rs on the victim from scratch vs from the surrogate's
            adversarial images of the last L0 attack in ``attacks`` (e.g. sparse-pgd).
        transfer_images: held-out images the transfer attacks run on.
        checkpoint: the answers ``.npz`` (resumed when it exists).
        progress: ``progress(queries_spent, budget)``.
        seed: seed of the held-out split.

    Raises:
        ShapeError: data of another shape than the victim's, or a surrogate architecture
            that does not fit; raised before any query.
        ConfigError: a warm start without an L0 transfer attack, bad settings.
    """
    check_victim_fits(victim, query_data, "query images")
    if held_out is not None:
        check_victim_fits(victim, held_out, "held-out images")
    if warm_start is not None and _l0_attack(attacks) is None:
        raise ConfigError("a sparse-rs warm start needs an L0 transfer attack such as sparse-pgd")
    pool, held = split_holdout(query_data, held_out, holdout_fraction, seed)
    # Fail on an architecture that does not fit before the first query.
    from pixelguard.leakage.extraction import build_surrogate

    build_surrogate(extraction.arch, pool.image_shape, victim.num_classes, extraction.seed)
    holdout = make_holdout(victim, held.x, held.y)
    result = extraction.run(
        victim, pool.x, holdout=holdout, checkpoint=checkpoint, progress=progress
    )
    transfers: list[TransferResult] = []
    comparison = None
    if attacks:
        x_t, y_t = held.x[:transfer_images], held.y[:transfer_images]
        surrogate = result.classifier()
        transfers = [transfer_attack(a, surrogate, victim, x_t, y_t) for a in attacks]
        if warm_start is not None and not victim.capabilities.scores:
            logger.warning(
                "sparse-rs needs class scores; the victim returns labels only: no warm start"
            )
        elif warm_start is not None:
            sparse = transfers[_l0_attack(attacks)]  # type: ignore[index]
            comparison = warm_start_sparse_rs(warm_start, victim, x_t, y_t, sparse.x_adv)
    source = held.source if held_out is not None else f"{held.source} (held-out split)"
    return StealReport(result, holdout, source, transfers, comparison)


def _l0_attack(attacks: Sequence[Attack]) -> int | None:
    """Index of the last attack bounded in L0 (its adversarial pixels seed sparse-rs)."""
    found = None
    for i, attack in enumerate(attacks):
        if attack.threat_model.kind == "l0":
            found = i
    return found


def write_steal(
    report: StealReport,
    out: str | Path,
    *,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the surrogate to ``out``, and ``steal.json`` and ``report.html`` beside it.

    Each file is written atomically. Returns the paths written.
    """
    out = Path(out)
    with replaced_atomically(out) as tmp:
        report.extraction.save(tmp, class_names=class_names)
    data = {**report.to_dict(), **(extra or {}), "surrogate": str(out)}
    json_path = write_json(out.with_name("steal.json"), data)
    html_path = write_text(out.with_name("report.html"), steal_html(data))
    return [out, json_path, html_path]


# --- the HTML view -------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def steal_html(data: dict[str, Any]) -> str:
    """A self-contained page: headline, the agreement curve, the transfer attacks."""
    ex = data["extraction"]
    curve = ex["curve"]
    tiles = [
        tile("Agreement with the victim", _pct(data["agreement"]), "top-1, held out"),
        tile("Surrogate accuracy", _pct(data["accuracy"]), "true labels, held out"),
        tile("Victim queries", f"{ex['queries']:,}", f"budget {ex['params']['budget']:,}"),
    ]
    body = [
        section(
            "summary", "Extraction", tag("div", join(tiles), class_="tiles"), intro=_intro(data)
        )
    ]
    points_a = [(p["queries"], p["agreement"]) for p in curve if p["agreement"] is not None]
    points_c = [(p["queries"], p["accuracy"]) for p in curve if p["accuracy"] is not None]
    charts: list[str] = []
    if points_a:
        ticks = log_ticks(min(q for q, _ in points_a), max(q for q, _ in points_a))
        series = [Series("agreement", points_a, PALETTE[0])]
        if points_c:
            series.append(Series("accuracy", points_c, PALETTE[1]))
        svg = line_chart(
            series,
            title="Agreement and accuracy against victim queries",
            x=Axis("victim queries", ticks, log=True),
            y=percent_axis("held-out share"),
        )
        charts.append(figure(svg, [(s.name, s.colour) for s in series]))
    rows = [[f"{p['queries']:,}", _pct(p["agreement"]), _pct(p["accuracy"])] for p in curve]
    body.append(
        section(
            "curve",
            "Agreement curve",
            *charts,
            table(["queries", "agreement", "accuracy"], rows, numeric=(0, 1, 2)),
        )
    )
    transfer = data["transfer"]
    if transfer["attacks"]:
        rows = [
            [
                t["attack"],
                f"{t['n_victim_correct']:,}",
                _pct(t["surrogate_success_rate"]),
                _pct(t["transfer_success_rate"]),
                "-" if t["median_l0_pixels"] is None else f"{t['median_l0_pixels']:g}",
            ]
            for t in transfer["attacks"]
        ]
        parts: list[object] = [
            table(
                [
                    "attack (on the surrogate)",
                    "images",
                    "fools surrogate",
                    "transfers to victim",
                    "median pixels",
                ],
                rows,
                numeric=(1, 2, 3, 4),
            )
        ]
        warm = transfer["sparse_rs_warm_start"]
        if warm is not None:
            parts.append(tag("h3", "Sparse-RS on the victim, warm-started from the surrogate"))
            parts.append(
                table(
                    ["start", "success", "victim queries (total)", "mean queries (both succeed)"],
                    [
                        [
                            "random (cold)",
                            _pct(warm["cold_success_rate"]),
                            f"{warm['cold_queries_total']:,}",
                            _num(warm["cold_mean_queries_when_both_succeed"]),
                        ],
                        [
                            "surrogate adversarials (warm)",
                            _pct(warm["warm_success_rate"]),
                            f"{warm['warm_queries_total']:,}",
                            _num(warm["warm_mean_queries_when_both_succeed"]),
                        ],
                    ],
                    numeric=(1, 2, 3),
                )
            )
        body.append(
            section(
                "transfer",
                "Transfer attacks (from the surrogate)",
                *parts,
                intro=transfer["note"] + ".",
            )
        )
    nav = [("summary", "Extraction"), ("curve", "Curve")]
    if transfer["attacks"]:
        nav.append(("transfer", "Transfer"))
    return page(
        "pixelguard steal",
        f"{ex['method']} extraction of {data.get('model', {}).get('spec', 'the model')}",
        nav,
        body,
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _intro(data: dict[str, Any]) -> str:
    ex = data["extraction"]
    labels = "probabilities (soft labels)" if ex["soft_labels"] else "labels only (one-hot)"
    return (
        f"A {ex['arch']} surrogate trained on the victim's {labels} for "
        f"{ex['queries']:,} queries ({ex['replayed_from_checkpoint']:,} answered from the "
        f"checkpoint); measured on {data['holdout']['n_images']:,} held-out images "
        f"({data['holdout']['victim_queries']:,} victim queries, outside the budget)."
    )
