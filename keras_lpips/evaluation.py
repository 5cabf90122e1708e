"""Scoring a metric on BAPPS as the reference's `test_dataset_model.py` does: 2AFC per subset and
JND mAP, beside the classical baselines (`keras_lpips.baselines`).

    results = evaluate_run("dataset", model="runs/alex-lin")
    print(results_markdown(results))            # keras_lpips.reports
"""

import sys

import numpy as np

from keras_lpips import keras_compat
from keras_lpips.argument_checks import check_batch_size, check_load_size
from keras_lpips.array_checks import as_numpy
from keras_lpips.baselines import baseline_distances
from keras_lpips.errors import InputError
from keras_lpips.model import LPIPS
from keras_lpips.ranking import jnd_map, scores_by_subset, twoafc_scores


def evaluate_run(
    data_root,
    model=None,
    metric=None,
    subsets=None,
    jnd=None,
    jnd_subsets=None,
    baselines=True,
    batch_size=50,
    load_size=None,
    progress=False,
    keep_scores=False,
    distances=None,
):
    """Scores a metric on the BAPPS validation sets beside the reference's baselines.

    The metric is `metric` (an `LPIPS`), or loaded from `model` (a run folder or .keras file);
    given both, `metric` is `model`'s, loaded already, and `model` names the results.
    `load_size` defaults to the run's (from `model`'s run.json), else 64. `distances`: the metric's
    `(d0, d1)` for the 2AFC triplets, in order, computed already (a fit run's `val_distances.npz`):
    the metric then runs on the JND pairs only. Returns::

        {"model": ..., "data": ..., "columns": ["model", "l2", "ssim", "psnr"],
         "2afc": {subset: {column: 2AFC score}, ..., "all": pooled over triplets, "mean": of subsets},
         "jnd": {subset: {column: mAP}, ...},            (when jnd/val exists, or jnd=True)
         "counts": {"2afc": {subset: n}, "jnd": {subset: n}},
         "scores": {subset: {column: [per-triplet 2AFC score, ...]}},  (with keep_scores=True)
         "skipped": ["2AFC: no 2afc/val folder in ROOT"]}  (a set absent from the data, or
                    without any of `subsets`, if any)

    A dataset with only JND pairs (`data download --split jnd`) gets its JND mAP, its "2afc"
    and "counts"["2afc"] empty and the 2AFC set listed in "skipped"; one with only 2AFC
    triplets its 2AFC scores. `jnd=True` asks for the JND set (it must be there), `jnd=False`
    leaves it out.

    `subsets` (a name or a list; None: all) restricts both sets: the 2AFC set must have each
    of them; the JND set (BAPPS': traditional and cnn) is scored on those it has, and listed in
    "skipped" where it has none of them (without a 2AFC set, it must have each). `jnd_subsets`
    names the JND subsets apart from `subsets` (each must be there).

    `load_size` below what the metric takes (`metric.min_input_size`) is an `InputError`, before
    any image is read.

    2AFC as the reference's `score_2afc_dataset`, JND mAP as its `score_jnd_dataset`; baselines
    as its test_dataset_model.py with the default Lab colorspace: "l2" (lpips.l2 in Lab), "ssim"
    (DSSIM, lpips.dssim in Lab) and "psnr" (on the 8-bit RGB images).
    """
    from keras_lpips.data.bapps import has_split, resolve_root

    root = resolve_root(data_root)
    subsets = [subsets] if isinstance(subsets, str) else subsets
    twoafc = has_split(root, "2afc", "val")
    jnd = jnd if jnd is not None else has_split(root, "jnd", "val")
    if not twoafc and not jnd:
        raise InputError(f"No 2afc/val or jnd/val folder in {root}: nothing to evaluate")
    batch_size = check_batch_size(batch_size)
    metric, name, load_size = _metric_to_score(model, metric, load_size)
    columns = ["model"] + (["l2", "ssim", "psnr"] if baselines else [])
    scoring = _Scoring(metric, data_root, columns, batch_size, load_size, progress and sys.stderr.isatty())
    result = {"model": name, "data": str(data_root), "load_size": load_size, "columns": columns}
    result.update({"2afc": {}, "counts": {"2afc": {}}})
    skipped = []
    if twoafc:
        _score_twoafc(scoring, result, subsets, distances, keep_scores)
    else:
        skipped.append(f"2AFC: no 2afc/val folder in {root}")
    if jnd and jnd_subsets is None and subsets is not None and twoafc and has_split(root, "jnd", "val"):
        jnd_subsets = _jnd_subsets_of(root, subsets, skipped)
        jnd = bool(jnd_subsets)
    if jnd:  # without a 2AFC set, each of `subsets` must be there (`list_jnd` says which is not)
        _score_jnd(scoring, result, subsets if jnd_subsets is None else jnd_subsets)
    if skipped:
        result["skipped"] = skipped
    return result


def _metric_to_score(model, metric, load_size):
    """(metric, its name in the results, the load size) for `evaluate_run`: `metric`, or loaded
    from `model`; the load size given, else the run's (`model`'s run.json), else 64, checked
    against what the metric takes."""
    if metric is None:
        if model is None:
            raise InputError("evaluate_run needs a model (run folder or .keras file) or a metric")
        from keras_lpips.resolve import load_metric

        metric = load_metric(model)
    if model is not None:  # also with `metric` given, loaded from `model` already: its name and run.json
        name = str(model)
        if load_size is None:
            load_size = _recorded_load_size(model)
    else:
        name = f"{metric.net} v{metric.version} {metric.distance}"
    min_size, kept = getattr(metric, "min_input_size", 1), getattr(metric, "layers_kept", None)
    return metric, name, check_load_size(64 if load_size is None else load_size, min_size, metric.net, kept)


def _recorded_load_size(model):
    """The load size the fit run at `model` records in its run.json (None where `model` is no run
    folder, or its run records none); `DataError` where that file cannot be read."""
    from keras_lpips.training.run_folder import RunFolder

    record = RunFolder(model).previous_record(advice="pass load_size= to evaluate without it")
    return record.get("config", {}).get("load_size")


def _jnd_subsets_of(root, subsets, skipped):
    """Those of `subsets` the JND set under `root` has; none adds why to `skipped`."""
    from keras_lpips.data.bapps import available_subsets

    present = available_subsets(root / "jnd" / "val")
    chosen = [s for s in subsets if s in present]
    if not chosen:
        skipped.append(f"JND: jnd/val in {root} has none of the subsets {', '.join(subsets)} "
                       f"(it has {', '.join(present) or 'none'})")  # fmt: skip
    return chosen


def _score_twoafc(scoring, result, subsets, distances, keep_scores):
    """Adds the 2AFC scores of the val triplets in `subsets` (`evaluate_run`'s "2afc", counts, scores)."""
    from keras_lpips.data.bapps import list_twoafc

    records = list_twoafc(scoring.data_root, "val", subsets)
    scores = scoring.twoafc(records, distances)
    subset_of = np.array([r.subset for r in records])
    names = [str(s) for s in dict.fromkeys(subset_of)]
    columns = scoring.columns
    by_column = {c: scores_by_subset(scores[c], subset_of) for c in columns}
    for row in [*names, "all", "mean"]:
        result["2afc"][row] = {c: by_column[c][row] for c in columns}
    result["counts"]["2afc"] = {s: int((subset_of == s).sum()) for s in names}
    if keep_scores:  # for paired comparisons of metrics on the same triplets
        result["scores"] = {s: {c: scores[c][subset_of == s].tolist() for c in columns} for s in names}


def _score_jnd(scoring, result, subsets):
    """Adds the JND mAP of the pairs in `subsets` (`evaluate_run`'s "jnd" and its counts)."""
    from keras_lpips.data.bapps import list_jnd

    pairs = list_jnd(scoring.data_root, subsets)
    pair_distances, same = scoring.jnd(pairs)
    pair_subset = np.array([p.subset for p in pairs])
    result["jnd"] = {}
    for s in map(str, dict.fromkeys(pair_subset)):
        mask = pair_subset == s
        result["jnd"][s] = {c: jnd_map(pair_distances[c][mask], same[mask]) for c in scoring.columns}
    result["counts"]["jnd"] = {str(s): int((pair_subset == s).sum()) for s in dict.fromkeys(pair_subset)}


class _Scoring:
    """One pass over the 2AFC triplets or the JND pairs, scoring the metric and the baselines."""

    def __init__(self, metric, data_root, columns, batch_size, load_size, progress):
        self.metric, self.data_root, self.columns = metric, data_root, columns
        self.options = {"batch_size": batch_size, "load_size": load_size, "input_range": metric.input_range, "shuffle": False}
        self.progress = progress
        self.twoafc_distances, self.pair_distances = distance_functions(metric)

    def _batches(self, dataset, records, label):
        from keras_lpips.data.pipeline import iterate_naming_bad_images

        done = 0
        for batch in iterate_naming_bad_images(dataset, records, self.data_root):
            yield batch
            done += len(batch[next(iter(batch))])
            if self.progress:
                print(f"\r{label}: {done}/{len(records)}", end="", file=sys.stderr)
        if self.progress:
            print(file=sys.stderr)

    def _baselines(self, a, b):
        return baseline_distances(a.numpy(), b.numpy(), self.metric.input_range)

    def twoafc(self, records, distances=None):
        """{column: per-triplet 2AFC scores}; the metric's from `distances` (d0, d1) when given."""
        from keras_lpips.data.pipeline import twoafc_dataset

        per = {c: [] for c in self.columns}
        if distances is not None:
            d0, d1 = (as_numpy(d, np.float32).reshape(-1) for d in distances)
            if not len(d0) == len(d1) == len(records):
                raise InputError(
                    f"distances hold {len(d0)} and {len(d1)} values for {len(records)} 2AFC triplets in {self.data_root}"
                )
            per["model"].append(twoafc_scores(d0, d1, np.array([r.judge for r in records], np.float32)))
            if len(self.columns) == 1:
                return {"model": per["model"][0]}
        for batch in self._batches(twoafc_dataset(records, **self.options), records, "2afc"):
            judge = batch["judge"].numpy()
            if distances is None:
                d0, d1 = self.twoafc_distances(batch["ref"], batch["p0"], batch["p1"])
                per["model"].append(twoafc_scores(np.asarray(d0), np.asarray(d1), judge))
            if len(self.columns) > 1:
                b0, b1 = self._baselines(batch["ref"], batch["p0"]), self._baselines(batch["ref"], batch["p1"])
                for c in self.columns[1:]:
                    per[c].append(twoafc_scores(b0[c], b1[c], judge))
        return {c: np.concatenate(v) for c, v in per.items()}

    def jnd(self, pairs):
        """({column: per-pair distances}, per-pair "same" judgments)."""
        from keras_lpips.data.pipeline import jnd_dataset

        per, same = {c: [] for c in self.columns}, []
        for batch in self._batches(jnd_dataset(pairs, **self.options), pairs, "jnd"):
            per["model"].append(np.asarray(self.pair_distances(batch["p0"], batch["p1"])))
            if len(self.columns) > 1:
                b = self._baselines(batch["p0"], batch["p1"])
                for c in self.columns[1:]:
                    per[c].append(b[c])
            same.append(batch["same"].numpy())
        return {c: np.concatenate(v) for c, v in per.items()}, np.concatenate(same)


def distance_functions(metric):
    """`(twoafc(ref, p0, p1) -> (d0, d1), pair(img0, img1) -> d)` of an `LPIPS` metric in inference:
    the metric's own methods, compiled once per metric for float32 images of any batch and size
    (`keras_compat.traced_per_metric`) and kept for its next evaluations. An `ExportedMetric`'s
    signatures are compiled already: its own methods serve."""
    if not isinstance(metric, LPIPS):
        return metric.twoafc, lambda img0, img1: metric([img0, img1])

    def make(metric_ref):
        def twoafc(ref, p0, p1):
            return metric_ref().twoafc(ref, p0, p1, training=False)

        def pair(img0, img1):
            return metric_ref()([img0, img1], training=False)

        image = keras_compat.image_batch_spec()
        return keras_compat.once_traced(twoafc, [image] * 3), keras_compat.once_traced(pair, [image] * 2)

    return keras_compat.traced_per_metric(metric, "distances", make)


