"""Where does a model err on the objects set? (docs/RESULTS.md, "The RGB stream alone").

The held object is easy to find when its hand moves (raise an arm) and hard when it does not
(kick a leg: the object rests in the still hand on the kicking leg's side), harder still when the
idle second person holds a distractor in a hand as still. This scores a finished run's saved test
scores (``scores.npz``) in those four scene cells: top-1, the object half of the label, the motion
half, and the limb (arm or leg: all that the pixels can tell of the motion, the side being
ambiguous from the front and the back).

    python -m deformact.tools.objects_errors runs/ablation_objects/runs/rgb_only_40ep/seed0 [RUN ...]
    # a `deformact test` folder (no config.yaml): name the config and the overrides it was tested with
    python -m deformact.tools.objects_errors TEST_OUT -c RUN/config.yaml --set data.num_test=2400 --set data.seed=1

The test split is built again from the config (pose only: the scene parameters decide the cells);
scores whose labels differ from it are refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deformact.errors import DataError, DeformactError

CELLS = ("all", "arm, alone", "arm, two people", "leg, alone", "leg, two people")


def _kicks(motion: np.ndarray) -> np.ndarray:
    """Which motion indices kick a leg (the others raise an arm)."""
    from deformact.data.synthetic import MOTIONS

    return np.isin(motion, [MOTIONS.index("kick_left_leg"), MOTIONS.index("kick_right_leg")])


def scene_cells(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean masks (one per :data:`CELLS` name) over the clips of an objects split's ``params``:
    whether the actor raises an arm or kicks a leg, and whether the idle second person (who holds
    one of the distractors) is in the scene."""
    leg = _kicks(params["motion"])
    two = np.asarray(params["second"], bool)
    return {"all": np.ones_like(two), "arm, alone": ~leg & ~two, "arm, two people": ~leg & two,
            "leg, alone": leg & ~two, "leg, two people": leg & two}


def breakdown(pred: np.ndarray, labels: np.ndarray, cells: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per cell: clips, top-1, object, motion and limb accuracy (fractions; NaN for an empty cell),
    the halves of a label read with :func:`deformact.data.synthetic_objects.label_parts`."""
    from deformact.data.synthetic_objects import label_parts

    parts = label_parts()
    motion, obj = parts["motion"], parts["object"]
    kick = _kicks(motion)
    right = {"top1": pred == labels, "object": obj[pred] == obj[labels], "motion": motion[pred] == motion[labels],
             "limb": kick[pred] == kick[labels]}
    out = {}
    for name, mask in cells.items():
        n = int(mask.sum())
        out[name] = {"clips": n, **{m: float(r[mask].mean()) if n else float("nan") for m, r in right.items()}}
    return out


def run_breakdown(run: str | Path, config: str | Path | None = None, overrides: Sequence[str] = ()
                  ) -> dict[str, dict[str, float]]:
    """:func:`breakdown` of a run directory's ``scores.npz``, its test split built from ``config``
    (default: the run's ``config.yaml``) with ``--set`` style ``overrides``."""
    from deformact.engine.builders import build_dataset
    from deformact.engine.config import apply_overrides, config_path, read_config_file
    from deformact.io.scores import load_scores

    run = Path(run)
    scores = load_scores(run)
    cfg = read_config_file(config_path(config) if config is not None else run / "config.yaml")
    # the pose alone: the scene parameters decide the cells, and nothing needs rendering
    data = apply_overrides(cfg, [*overrides, "data.modality=pose"])["data"]
    if data.get("variant") != "objects":
        raise DataError(f"{run}: not a run on the objects set (data.variant is {data.get('variant')!r})")
    test = build_dataset(data, "test", train=False)
    if not np.array_equal(test.data["label"], scores.labels):
        raise DataError(f"{scores.path}: its labels are not those of the run's test split ({len(test)} "
                        f"clips, data.seed {data.get('seed', 0)})")
    return breakdown(scores.scores.argmax(1), scores.labels, scene_cells(test.data["params"]))


def format_breakdown(name: str, table: dict[str, dict[str, float]]) -> str:
    """One line per cell: ``name | cell | clips | top-1 | object | motion | limb`` (in %)."""
    lines = []
    for cell, m in table.items():
        pct = " | ".join(f"{100 * m[k]:.1f}" for k in ("top1", "object", "motion", "limb"))
        lines.append(f"| {name} | {cell} | {m['clips']} | {pct} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deformact.tools.objects_errors",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories trained and tested on the objects set")
    parser.add_argument("-c", "--config", help="the config the scores were tested with (default: RUN/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override the scores were tested with, e.g. data.num_test=2400 (repeatable)")
    args = parser.parse_args(argv)
    try:
        tables = [format_breakdown(run, run_breakdown(run, args.config, args.set)) for run in args.runs]
    except DeformactError as e:
        parser.exit(2, f"error: {e}\n")
    print("| run | cell | clips | top-1 % | object % | motion % | limb % |\n|---|---|---|---|---|---|---|")
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
