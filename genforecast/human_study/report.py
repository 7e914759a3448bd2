"""``human-study report``: the paper's human-study numbers and pictures from a study's answers.

Per group (each variant, and the real images as controls):

* mean likability and mean novelty (1-5) with 95% intervals from a two-way bootstrap over raters and images;
* the share of answers judging the image made by a human designer, and the share judging it human-made *and*
  original (novelty >= ``original_threshold``, default 4): DesIGN's "61% thought to be created by human designers
  while also being considered original" is this number for its generated images;
* the controls' row gives the same rates for real designs: the ceiling the variants are compared with.

Across groups: a Bradley-Terry ranking of the variants from the pairwise answers (votes resampled for its
intervals; a level with fewer than ``min_votes`` votes is listed but not ranked), Krippendorff's alpha (ordinal for
the two 1-5 scales, nominal for human/computer), and two pictures: likability against novelty per group (the
Wundt-curve view: per-image means, group means with intervals, a quadratic fit over the generated images), and each
generated image's mean human novelty against its automatic nearest-neighbour distance, with Spearman's rank
correlation. Writes ``report.md``, ``report.json`` and the PNGs, and logs the tables and pictures to W&B (group
``fashion`` by default); a logging failure is reported and never fails the command.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforecast.human_study.config import CONTROL, load_study_config
from genforecast.human_study.create import CONFIG_NAME
from genforecast.human_study.statistics import bradley_terry, krippendorff_alpha, two_way_bootstrap
from genforecast.human_study.storage import DATABASE_NAME, all_answers, get_meta, items, open_database

DEFAULT_REPLICATES = 1000
DEFAULT_MIN_VOTES = 20


@dataclass
class Report:
    """Everything the report states; :meth:`to_dict` is ``report.json``."""

    name: str
    raters: int
    ratings: int
    pair_votes: int
    original_threshold: int
    replicates: int
    groups: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    agreement: dict[str, float]
    novelty_correlation: dict[str, float]
    per_item: list[dict[str, Any]] = field(repr=False, default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()}


def _interval(values: list[float], raters: list[str], image_ids: list[str], replicates: int,
              rng: np.random.Generator) -> dict[str, float]:
    return two_way_bootstrap(np.asarray(values, dtype=np.float64), np.asarray(raters), np.asarray(image_ids),
                             replicates, rng).as_dict()


def group_rows(ratings: list[dict[str, Any]], order: list[str], item_counts: dict[str, int], threshold: int,
               replicates: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One row per group in ``order``: counts, and each rated quantity as ``{"value", "low", "high"}``."""
    rows = []
    for group in order:
        answers = [row for row in ratings if row["variant_a"] == group]
        raters = [row["rater_id"] for row in answers]
        image_ids = [row["item_a"] for row in answers]
        quantities = {
            "likability": [row["likability"] for row in answers],
            "novelty": [row["novelty"] for row in answers],
            "human": [float(row["origin"] == "human") for row in answers],
            "human_and_original": [float(row["origin"] == "human" and row["novelty"] >= threshold)
                                   for row in answers],
        }
        rows.append({"group": group, "kind": "control" if group == CONTROL else "generated",
                     "images": item_counts.get(group, 0), "ratings": len(answers),
                     "raters": len(set(raters)),
                     **{name: _interval(values, raters, image_ids, replicates, rng)
                        for name, values in quantities.items()}})
    return rows


def ranking_rows(pairs: list[dict[str, Any]], levels: list[str], replicates: int, min_votes: int,
                 rng: np.random.Generator) -> list[dict[str, Any]]:
    """The Bradley-Terry table: one row per level, best first; ``rank`` is None below ``min_votes`` votes."""
    index = {level: position for position, level in enumerate(levels)}
    votes = [(row["preferred_variant"],
              row["variant_b"] if row["preferred"] == row["item_a"] else row["variant_a"])
             for row in pairs if row["variant_a"] != row["variant_b"]]
    votes = [(winner, loser) for winner, loser in votes if winner in index and loser in index]
    strengths = bradley_terry(np.array([index[w] for w, _ in votes], dtype=int),
                              np.array([index[lo] for _, lo in votes], dtype=int), len(levels), replicates, rng)
    wins, appearances = defaultdict(int), defaultdict(int)
    for winner, loser in votes:
        wins[winner] += 1
        appearances[winner] += 1
        appearances[loser] += 1
    rows = [{"level": level, "strength": strength.as_dict(), "votes": appearances[level],
             "win_rate": wins[level] / appearances[level] if appearances[level] else math.nan}
            for level, strength in zip(levels, strengths)]
    ranked = sorted((row for row in rows if row["votes"] >= min_votes and not math.isnan(row["strength"]["value"])),
                    key=lambda row: -row["strength"]["value"])
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    ranked_levels = {row["level"] for row in ranked}
    return ranked + [row | {"rank": None} for row in rows if row["level"] not in ranked_levels]


def item_rows(ratings: list[dict[str, Any]], study_items: list[Any]) -> list[dict[str, Any]]:
    """Per image: its group, automatic scores, number of ratings and mean ratings (NaN when unrated)."""
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in ratings:
        by_item[row["item_a"]].append(row)
    def mean(answers: list[dict[str, Any]], key: str) -> float:
        if not answers:
            return math.nan
        return float(np.mean([row["origin"] == "human" if key == "human" else row[key] for row in answers]))

    rows = []
    for item in study_items:
        answers = by_item.get(item.id, [])
        rows.append({"id": item.id, "group": item.variant, "novelty_nn": item.novelty_nn,
                     "shape_entropy": item.shape_entropy, "texture_entropy": item.texture_entropy,
                     "ratings": len(answers),
                     **{key: mean(answers, key) for key in ("likability", "novelty", "human")}})
    return rows


def novelty_correlation(per_item: list[dict[str, Any]]) -> dict[str, float]:
    """Spearman's rank correlation between automatic NN distance and mean human novelty, over rated images."""
    from scipy.stats import spearmanr

    pairs = [(row["novelty_nn"], row["novelty"]) for row in per_item
             if row["novelty_nn"] is not None and row["ratings"] > 0]
    if len(pairs) < 3:
        return {"rho": math.nan, "p_value": math.nan, "images": len(pairs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column gives NaN, which the report shows as such
        result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "images": len(pairs)}


def build_report(study_dir: str | Path, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                 min_votes: int = DEFAULT_MIN_VOTES) -> Report:
    """Compute every number of the report from the study folder's database (no files written)."""
    study_dir = Path(study_dir)
    config = load_study_config(study_dir / CONFIG_NAME)
    connection = open_database(study_dir / DATABASE_NAME)
    try:
        answers = all_answers(connection)
        study_items = items(connection)
        name = get_meta(connection).get("name", config.name)
    finally:
        connection.close()
    rng = np.random.default_rng(seed)
    ratings = [row for row in answers if row["task"] == "rate"]
    pairs = [row for row in answers if row["task"] == "pair"]
    item_counts: dict[str, int] = defaultdict(int)
    for item in study_items:
        item_counts[item.variant] += 1
    variants = [variant for variant in config.variants if item_counts.get(variant)]
    order = variants + ([CONTROL] if item_counts.get(CONTROL) else [])
    levels = variants + ([CONTROL] if any(CONTROL in (row["variant_a"], row["variant_b"]) for row in pairs) else [])
    per_item = item_rows(ratings, study_items)
    agreement = {
        "likability (ordinal)": krippendorff_alpha(
            np.array([row["likability"] for row in ratings]), np.array([row["rater_id"] for row in ratings]),
            np.array([row["item_a"] for row in ratings]), "ordinal", [1, 2, 3, 4, 5]),
        "novelty (ordinal)": krippendorff_alpha(
            np.array([row["novelty"] for row in ratings]), np.array([row["rater_id"] for row in ratings]),
            np.array([row["item_a"] for row in ratings]), "ordinal", [1, 2, 3, 4, 5]),
        "human or computer (nominal)": krippendorff_alpha(
            np.array([float(row["origin"] == "human") for row in ratings]),
            np.array([row["rater_id"] for row in ratings]), np.array([row["item_a"] for row in ratings]),
            "nominal", [0.0, 1.0]),
    }
    return Report(
        name=name, raters=len({row["rater_id"] for row in answers}), ratings=len(ratings), pair_votes=len(pairs),
        original_threshold=config.original_threshold, replicates=replicates,
        groups=group_rows(ratings, order, item_counts, config.original_threshold, replicates, rng),
        ranking=ranking_rows(pairs, levels, replicates, min_votes, rng),
        agreement=agreement, novelty_correlation=novelty_correlation(per_item), per_item=per_item)


# ---- pictures ------------------------------------------------------------------------------------------------


def _colours(groups: list[str]) -> dict[str, Any]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    colours = {group: palette(index % 10) for index, group in enumerate(g for g in groups if g != CONTROL)}
    colours[CONTROL] = (0.2, 0.2, 0.2, 1.0)
    return colours


def draw_figures(report: Report, out: Path) -> dict[str, str]:
    """Write ``wundt.png``, ``novelty_vs_nn.png`` and ``bradley_terry.png`` into ``out``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = [row["group"] for row in report.groups]
    colours = _colours(groups)
    figures = {}

    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for row in report.groups:
        points = [(item["novelty"], item["likability"]) for item in report.per_item
                  if item["group"] == row["group"] and item["ratings"] > 0]
        if points:
            axes.scatter(*zip(*points), s=10, alpha=0.25, color=colours[row["group"]])
        novelty, likability = row["novelty"], row["likability"]
        if not math.isnan(novelty["value"]):
            axes.errorbar(novelty["value"], likability["value"],
                          xerr=[[novelty["value"] - novelty["low"]], [novelty["high"] - novelty["value"]]],
                          yerr=[[likability["value"] - likability["low"]], [likability["high"] - likability["value"]]],
                          fmt="s" if row["group"] == CONTROL else "o", markersize=9, capsize=3,
                          color=colours[row["group"]], label=f"{row['group']} ({row['ratings']} ratings)")
    generated = [(item["novelty"], item["likability"]) for item in report.per_item
                 if item["group"] != CONTROL and item["ratings"] > 0]
    if len(generated) >= 4:
        x, y = np.array(generated).T
        coefficients = np.polyfit(x, y, 2)
        grid = np.linspace(x.min(), x.max(), 100)
        axes.plot(grid, np.polyval(coefficients, grid), "--", color="0.5", label="quadratic fit (generated images)")
    axes.set_xlabel("novelty (mean rating, 1-5)")
    axes.set_ylabel("likability (mean rating, 1-5)")
    axes.set_title("Likability against novelty (Wundt view): images, and group means with 95% CI", fontsize=9)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(out / "wundt.png")
    plt.close(figure)
    figures["wundt"] = "wundt.png"

    scored = [item for item in report.per_item if item["novelty_nn"] is not None and item["ratings"] > 0]
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for group in groups:
        points = [(item["novelty_nn"], item["novelty"]) for item in scored if item["group"] == group]
        if points:
            axes.scatter(*zip(*points), s=14, alpha=0.7, color=colours[group], label=group)
    correlation = report.novelty_correlation
    axes.set_xlabel("automatic novelty: distance to the nearest catalogue image (classifier features)")
    axes.set_ylabel("human novelty (mean rating, 1-5)")
    axes.set_title(f"Human against automatic novelty: Spearman rho = {correlation['rho']:.2f} "
                   f"(p = {correlation['p_value']:.2g}, {correlation['images']} images)", fontsize=9)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "novelty_vs_nn.png")
    plt.close(figure)
    figures["novelty_vs_nn"] = "novelty_vs_nn.png"

    rows = list(reversed(report.ranking))
    figure, axes = plt.subplots(figsize=(6.4, 0.6 * len(rows) + 1.6), dpi=120)
    for position, row in enumerate(rows):
        strength = row["strength"]
        if not math.isnan(strength["value"]):
            low = strength["value"] - strength["low"] if not math.isnan(strength["low"]) else 0
            high = strength["high"] - strength["value"] if not math.isnan(strength["high"]) else 0
            axes.errorbar(strength["value"], position, xerr=[[low], [high]], fmt="o", capsize=4,
                          color=colours.get(row["level"], "k"))
    axes.set_yticks(range(len(rows)), [f"{row['level']} ({row['votes']} votes)" for row in rows])
    axes.axvline(0, color="0.8", linewidth=1)
    axes.set_xlabel("Bradley-Terry log-strength (centred), 95% bootstrap interval")
    axes.set_title("Pairwise preference", fontsize=9)
    figure.tight_layout()
    figure.savefig(out / "bradley_terry.png")
    plt.close(figure)
    figures["bradley_terry"] = "bradley_terry.png"
    return figures


# ---- Markdown, JSON and W&B ----------------------------------------------------------------------------------


def _formatted(interval: dict[str, float], percent: bool = False) -> str:
    """``3.41 [3.30, 3.52]`` (or ``61.2% [55.0, 67.1]``); ``-`` when there is no value, no brackets without an
    interval."""
    scale, digits, unit = (100, 1, "%") if percent else (1, 2, "")
    value, low, high = (interval[key] * scale for key in ("value", "low", "high"))
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}f}{unit}" + ("" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]")


GROUP_COLUMNS = ["group", "images", "ratings", "raters", "likability", "novelty", "judged human-made",
                 "human-made and original"]
RANKING_COLUMNS = ["rank", "variant", "log-strength [95% CI]", "votes", "win rate"]


def group_table(report: Report) -> list[list[str]]:
    return [[row["group"], str(row["images"]), str(row["ratings"]), str(row["raters"]),
             _formatted(row["likability"]), _formatted(row["novelty"]), _formatted(row["human"], percent=True),
             _formatted(row["human_and_original"], percent=True)] for row in report.groups]


def ranking_table(report: Report) -> list[list[str]]:
    return [[str(row["rank"]) if row["rank"] is not None else "not ranked", row["level"], _formatted(row["strength"]),
             str(row["votes"]), "-" if math.isnan(row["win_rate"]) else f"{100 * row['win_rate']:.1f}%"]
            for row in report.ranking]


def _markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown(report: Report) -> str:
    """The report as Markdown (figures linked by file name, next to it)."""
    correlation = report.novelty_correlation
    agreement = "\n".join(f"- {name}: {'-' if math.isnan(value) else f'{value:.3f}'}"
                          for name, value in report.agreement.items())
    figures = "\n\n".join(f"![{name}]({file})" for name, file in report.figures.items())
    return f"""# Human study report: {report.name}

{report.raters} raters, {report.ratings} ratings, {report.pair_votes} pairwise votes.

## Ratings per group

Means of the 1-5 answers and shares of answers, each with a 95% interval from {report.replicates} bootstrap
replicates resampling raters and images. "Human-made and original": judged made by a human designer and rated
{report.original_threshold} or more for novelty. The `control` row is real catalogue images.

{_markdown_table(GROUP_COLUMNS, group_table(report))}

## Ranking from the pairwise task (Bradley-Terry)

Centred log-strengths (choix ILSR), intervals from {report.replicates} resamplings of the votes; votes between
two images of one variant carry no ranking information and are left out.

{_markdown_table(RANKING_COLUMNS, ranking_table(report))}

## Agreement between raters (Krippendorff's alpha)

{agreement}

## Human and automatic novelty

Spearman's rank correlation between each generated image's mean novelty rating and its distance to the nearest
catalogue image in the classifier's feature space: rho = {correlation['rho']:.3f} (p = {correlation['p_value']:.3g},
{correlation['images']} images).

{figures}
"""


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def log_to_wandb(report: Report, out: Path, group: str) -> str:
    """Log the tables, agreement and pictures as one W&B run (job type ``human-study``) in ``group``.

    Returns a one-line outcome; never raises (the report is written whatever happens to the logging).
    """
    try:
        import wandb

        from genforecast.loggers import SuiteWandbLogger

        logger = SuiteWandbLogger(name=f"human-study-{report.name}", group=group, job_type="human-study",
                                  tags=[group, "human-study"], save_dir=str(out))
        logger.log_table(key="human_study/ratings", columns=GROUP_COLUMNS, data=group_table(report))
        logger.log_table(key="human_study/ranking", columns=RANKING_COLUMNS, data=ranking_table(report))
        logger.log_metrics({f"human_study/alpha/{name}": value for name, value in report.agreement.items()}
                           | {"human_study/novelty_spearman": report.novelty_correlation["rho"]})
        logger.log_image(key="human_study/figures", images=[str(out / file) for file in report.figures.values()],
                         caption=list(report.figures))
        if wandb.run is not None:
            wandb.finish()
        return f"logged to W&B (group {group})"
    except Exception as error:  # noqa: BLE001 (logging is a side channel: report it, do not fail the report)
        return f"W&B logging failed, report written anyway: {type(error).__name__}: {error}"


def write_report(study_dir: str | Path, out: str | Path | None = None, replicates: int = DEFAULT_REPLICATES,
                 seed: int = 0, min_votes: int = DEFAULT_MIN_VOTES, wandb_group: str | None = "fashion") -> Report:
    """Build the report and write ``report.md``, ``report.json`` and the PNGs to ``out`` (default
    ``<study>/report``); log to W&B unless ``wandb_group`` is None."""
    out = Path(out) if out is not None else Path(study_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(study_dir, replicates, seed, min_votes)
    report.figures = draw_figures(report, out)
    (out / "report.md").write_text(markdown(report))
    (out / "report.json").write_text(json.dumps(_json_safe(report.to_dict()), indent=1))
    if wandb_group is not None:
        print(log_to_wandb(report, out, wandb_group))
    return report
