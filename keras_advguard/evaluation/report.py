"""`EvaluationReport`: the figures of one `evaluate` run, as markdown, JSON, PNG and HTML."""

import base64
import html
import io
import json
import os
import shutil
import uuid

import numpy as np

from keras_advguard import _files, _validation
from keras_advguard.evaluation._format import (
    _clean_json,
    _counted,
    _mean_curve,
    _pct,
    _pm,
    _slug,
    _writer,
)


class EvaluationReport:
    """What `evaluate` measured, with its tables, figures and files.

    Build it with `keras_advguard.evaluate`; the constructor only stores the
    figures. Every table is rendered from the same records by `to_markdown`
    and `save` (report.md, report.json, one PNG per figure and a
    self-contained report.html with the figures embedded).

    Args:
        meta: dict, what was done (counts, budgets, seeds, timing, versions).
        attacks: dict `{attack: {...}}`, each oblivious attack's success rate
            on the sources, accuracy, perturbation norms, seconds, whether it
            came from the cache.
        detectors: dict `{detector: {"oblivious": {attack or "mixed":
            summary}, "attack_unknown": {train: {test: summary}},
            "adaptive": {...}}}`; a summary holds `auc`, `auc_std`, `tpr`,
            `tpr_std`, `fpr` (one per target FPR), `n_clean`,
            `n_adversarial`, `n_splits`.
        sanitizers: dict `{sanitizer: {"oblivious": {"clean": acc, attack:
            acc}, "adaptive": {attack: acc}}}`.
        undefended: dict `{"clean": acc, attack: acc}` of the classifier.
        roc: dict `{(detector, attack): [(scores_clean, scores_adv), ...]}`,
            the test scores of every split (for the ROC figures).
        adversarial: dict `{attack: {field: array}}`, the adversarial
            images (`evaluate(..., return_adversarial=True)`; see
            `adversarial()`), or `None`. Never part of `to_json()`.
            Defaults to `None`.

    Attributes:
        meta, attacks, detectors, sanitizers, undefended, roc: as given.

    Example:

        >>> report = EvaluationReport(
        ...     meta={"fprs": [0.05]}, attacks={}, detectors={}, sanitizers={},
        ...     undefended={"clean": 0.98}, roc={})
        >>> "Undefended classifier" in report.to_markdown()
        True
    """

    def __init__(self, meta, attacks, detectors, sanitizers, undefended, roc, adversarial=None):
        self.meta = meta
        self.attacks = attacks
        self.detectors = detectors
        self.sanitizers = sanitizers
        self.undefended = undefended
        self.roc = roc
        self._adversarial = adversarial

    def adversarial(self, attack):
        """The images one attack produced, kept by `evaluate(..., return_adversarial=True)`.

        One row per attacked image (every evaluated test image, or the first
        `num_images` sources of an attack given its own `num_images`).

        Args:
            attack: an attack of the report (a key of `attacks`).

        Returns:
            A dict of numpy arrays, one row per attacked image:
            `"x_adv"` the adversarial images; `"index"` each one's index
            into the images of `test` (for a `tf.data` test set: into the
            sample `evaluate` kept); `"source"` whether that test image is a
            source (classified correctly); `"y"` the true labels; `"y_pred"`
            the classifier's prediction of `x_adv`; `"success"` whether the
            attack succeeded (`y_pred == target` for a targeted attack, else
            `y_pred != y`); `"adversarial"` = `success & source`, the
            adversarial set the detectors were scored on; `"target"` the
            target labels (targeted attacks only). Copies: changing them
            leaves the report as it is.

        Raises:
            ValueError: the report keeps no images, or `attack` is not one
                of its attacks.
        """
        if self._adversarial is None:
            raise ValueError(
                "This report keeps no adversarial images: run "
                "`evaluate(..., return_adversarial=True)`. Received: attack={attack!r}"
            )
        _validation.check_choice("attack", attack, list(self._adversarial))
        return {k: np.array(v, copy=True) for k, v in self._adversarial[attack].items()}

    def _adversarial_npz(self):
        """`adversarial.npz` bytes: `attacks` (JSON list of labels), `{k}/{field}` per attack."""
        arrays = {"attacks": np.array(json.dumps(list(self._adversarial)))}
        for k, fields in enumerate(self._adversarial.values()):
            arrays.update({f"{k}/{name}": np.asarray(v) for name, v in fields.items()})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def __repr__(self):
        return (
            f"EvaluationReport(detectors={list(self.detectors)}, "
            f"sanitizers={list(self.sanitizers)}, attacks={list(self.attacks)})"
        )

    # ------------------------------------------------------------------
    # Tables

    @property
    def fprs(self):
        return list(self.meta.get("fprs", []))

    def _fpr_names(self):
        return [f"{100 * f:g}%" for f in self.fprs]

    def tables(self):
        """The report's tables as `[(title, note, header, rows)]` (strings)."""
        out = []
        rows = []
        for label, a in self.attacks.items():
            shown = dict(a["params"])
            shown.update({k: a[k] for k in ("target", "num_images") if a.get(k) is not None})
            params = ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
            )
            rows.append(
                [
                    label,
                    params,
                    _pct(a["success_rate"]),
                    f"{a['n_adversarial']} / {a['n_sources']}",
                    _pct(a["accuracy"]),
                    _pct(a["mean_l2"]),
                    _pct(a["mean_linf"]),
                    f"{a['seconds']:.1f}",
                    "yes" if a["cached"] else "no",
                ]
            )
        out.append(
            (
                "Attacks (oblivious: crafted on the undefended classifier)",
                "success rate = share of the correctly classified test images (the sources) "
                "whose attack changes the prediction (targeted attacks: makes it the target); "
                "accuracy over all attacked images (an attack with its own num_images attacks "
                "only the first num_images sources).",
                [
                    "attack",
                    "parameters",
                    "success rate",
                    "adversarial / sources",
                    "accuracy",
                    "mean L2",
                    "mean Linf",
                    "seconds",
                    "from cache",
                ],
                rows,
            )
        )
        rows = [
            ["undefended classifier", "-", _pct(self.undefended.get("clean"))]
            + [_pct(self.undefended.get(a)) for a in self.attacks]
        ]
        for name, s in self.sanitizers.items():
            if "error" in s:
                rows.append([name, "failed: " + s["error"], "-"] + ["-" for _ in self.attacks])
                continue
            rows.append(
                [name, "oblivious", _pct(s["oblivious"]["clean"])]
                + [_pct(s["oblivious"].get(a)) for a in self.attacks]
            )
            if s.get("adaptive"):
                rows.append(
                    [name, "adaptive (BPDA)", "-"]
                    + [_pct(s["adaptive"].get(a)) for a in self.attacks]
                )
        out.append(
            (
                "Undefended classifier and sanitizers: accuracy",
                "adaptive = the same attack run on the sanitized model with BPDA (identity "
                "gradient) through every sanitizer.",
                ["defence", "threat model", "clean"] + list(self.attacks),
                rows,
            )
        )
        fpr_names = self._fpr_names()
        rows = []
        for name, d in self.detectors.items():
            if "error" in d:
                rows.append([name, "failed: " + d["error"], "-"] + ["-"] * len(fpr_names) + ["-"])
            for attack, summary in d.get("oblivious", {}).items():
                if summary is None:
                    rows.append([name, attack, "n/a"] + ["n/a"] * len(fpr_names) + ["0 / 0"])
                    continue
                rows.append(
                    [name, attack, _pm(summary["auc"], summary["auc_std"])]
                    + [_pm(m, s) for m, s in zip(summary["tpr"], summary["tpr_std"])]
                    + [f"{summary['n_clean']} / {summary['n_adversarial']}"]
                )
        out.append(
            (
                "Detectors, oblivious attacks: AUC and TPR at FPR (mean ± std over splits)",
                f"{self.meta.get('splits', '?')} splits by source image; thresholds from "
                "clean calibration images only; trained detectors are trained on the "
                "attack of the row (mixed: on all).",
                ["detector", "attack", "AUC"]
                + [f"TPR @ {f} FPR" for f in fpr_names]
                + ["n clean / adv (test)"],
                rows,
            )
        )
        rows = []
        for name, d in self.detectors.items():
            adaptive = d.get("adaptive")
            if adaptive is None:
                continue
            mixed = d.get("oblivious", {}).get("mixed")
            if "error" in adaptive:
                rows.append(
                    [name, d.get("score_tensor_kind", "?"), "failed: " + adaptive["error"]]
                    + [""] * (2 + len(fpr_names))
                )
                continue
            oblivious_tpr = mixed["tpr"] if mixed else [None] * len(fpr_names)
            adaptive_tpr = adaptive.get("tpr", [None] * len(fpr_names))
            rows.append(
                [
                    name,
                    d.get("score_tensor_kind", "?"),
                    f"{_pct(mixed and mixed['auc'])} / {_pct(adaptive.get('auc'))}",
                ]
                + [f"{_pct(a)} / {_pct(b)}" for a, b in zip(oblivious_tpr, adaptive_tpr)]
                + [
                    _pct(adaptive["success_rate"]),
                    " / ".join(_pct(v) for v in adaptive["sr_at_fpr"]),
                    _counted(
                        adaptive.get("n_flagged"),
                        adaptive.get("n_fooled"),
                        adaptive.get("tpr_interval"),
                    ),
                    _counted(
                        adaptive.get("n_evaded"),
                        adaptive.get("n_sources"),
                        adaptive.get("sr_interval"),
                    ),
                ]
            )
        if rows:
            out.append(
                (
                    "Detectors, oblivious vs adaptive",
                    "oblivious = the mixed attacks crafted on the classifier alone; adaptive = "
                    "the strongest per source of selective and orthogonal PGD (step eps/10) "
                    "and selective PGD with a step shrinking to eps/200, untargeted and "
                    "targeted at the source's runner-up class "
                    f"(eps={self.meta.get('adaptive_eps', 0):g}) on the classifier "
                    "and the detector's score_tensor, thresholded at the largest FPR. "
                    "SR = share of attacked sources misclassified and not detected. "
                    "The last two columns give the counts behind the adaptive TPR "
                    "(fooling images flagged / fooling images) and SR (sources "
                    "evaded / attacked sources) at each FPR, with their 95% Wilson "
                    "intervals in percent (`metrics.proportion_interval`): a TPR "
                    "measured on a few fooling images pins down little.",
                    ["detector", "score_tensor", "AUC oblivious / adaptive"]
                    + [f"TPR @ {f} FPR oblivious / adaptive" for f in fpr_names]
                    + [
                        "adaptive success rate",
                        f"SR @ {' / '.join(fpr_names)} FPR",
                        "adaptive TPR: flagged / fooled [95% interval, %]",
                        "SR: evaded / sources [95% interval, %]",
                    ],
                    rows,
                )
            )
        for name, d in self.detectors.items():
            matrix = d.get("attack_unknown") or {}
            if not matrix:
                continue
            tests = list(next(iter(matrix.values())))
            rows = [
                [f"trained on {train}"] + [_pct(cell and cell["auc"]) for cell in row.values()]
                for train, row in matrix.items()
            ]
            out.append(
                (
                    f"Attack unknown: {name} (AUC, trained on the row, tested on the column)",
                    "",
                    [""] + [f"tested on {t}" for t in tests],
                    rows,
                )
            )
        return out

    def summary(self):
        """One paragraph: what was actually done."""
        m = self.meta
        parts = [
            f"{m.get('n_images', '?')} test images attacked, {m.get('n_sources', '?')} "
            "classified correctly (the sources)",
            f"{len(self.attacks)} attack(s): {', '.join(self.attacks) or 'none'}",
            f"{len(self.detectors)} detector(s): {', '.join(self.detectors) or 'none'}",
            f"{len(self.sanitizers)} sanitizer(s): {', '.join(self.sanitizers) or 'none'}",
            f"{m.get('splits', '?')} splits by source image",
            f"threat models: {', '.join(m.get('threat_models', []))}",
        ]
        if "cache_hits" in m:
            parts.append(f"attack cache: {m['cache_hits']} loaded, {m['cache_misses']} computed")
        if "timing" in m:
            parts.append(f"{m['timing'].get('total', 0):.1f} s")
        if m.get("baselines_left_out"):
            parts.append(
                "the baselines (max_softmax, input_cnn) were left out (baselines=False): "
                "no method here is measured against them"
            )
        if m.get("quick"):
            parts.append("quick budgets")
        return "; ".join(parts) + "."

    def to_markdown(self):
        """The report as a markdown document (summary and every table)."""
        lines = ["# Evaluation report", "", self.summary(), ""]
        for title, note, header, rows in self.tables():
            lines += [f"## {title}", ""]
            if note:
                lines += [note, ""]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(" --- " for _ in header) + "|")
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
        return "\n".join(lines)

    def to_dict(self):
        """The figures as plain, JSON-safe Python data (ROC as mean curves)."""
        roc = {}
        grid = np.linspace(0.0, 1.0, 101)
        for (detector, attack), folds in self.roc.items():
            curve = _mean_curve(folds, grid)
            if curve is not None:
                roc.setdefault(detector, {})[attack] = curve
        return _clean_json(
            {
                "meta": self.meta,
                "attacks": self.attacks,
                "undefended": self.undefended,
                "sanitizers": self.sanitizers,
                "detectors": self.detectors,
                "roc": roc,
            }
        )

    def to_json(self, indent=2):
        """`to_dict()` as a JSON string (strict: no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    # ------------------------------------------------------------------
    # Figures

    def plot_roc(self, attack="mixed", *, detectors=None, ax=None, fpr_markers=None):
        """Mean ROC (± 1 std over splits) of every detector on one attack.

        Args:
            attack: an attack of the report, or `"mixed"` (all attacks).
                Defaults to `"mixed"`.
            detectors: names to draw. Defaults to `None`: all.
            ax: matplotlib `Axes`. Defaults to `None`: a new figure.
            fpr_markers: vertical markers. Defaults to `None`: the report's FPRs.

        Returns:
            The matplotlib `Axes`.

        Raises:
            ValueError: an attack or detector the report does not hold.
        """
        from keras_advguard import plots

        _validation.check_choice("attack", attack, list(self.attacks) + ["mixed"])
        names = list(self.detectors) if detectors is None else list(detectors)
        for name in names:
            _validation.check_choice("detectors", name, list(self.detectors))
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(5.5, 5))
        markers = self.fprs if fpr_markers is None else fpr_markers
        drawn = 0
        for name in names:
            folds = [f for f in self.roc.get((name, attack), []) if len(f[0]) and len(f[1])]
            if not folds:
                continue
            plots.plot_mean_roc(
                folds,
                ax=ax,
                name=name,
                plot_chance_level=drawn == 0,
                fpr_markers=markers if drawn == 0 else None,
            )
            drawn += 1
        ax.set_title(f"Detectors vs {attack} (oblivious)")
        return ax

    def plot_adaptive(self, ax=None):
        """Bars: each detector's AUC under the oblivious (mixed) and the adaptive attack."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 4))
        names, oblivious, adaptive = [], [], []
        for name, d in self.detectors.items():
            mixed = (d.get("oblivious") or {}).get("mixed")
            a = d.get("adaptive") or {}
            names.append(name)
            oblivious.append(np.nan if mixed is None else mixed["auc"])
            adaptive.append(a.get("auc", np.nan))
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, oblivious, 0.4, label="oblivious (mixed)")
        ax.bar(pos + 0.2, adaptive, 0.4, label="adaptive (selective / orthogonal PGD)")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(pos, names, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("ROC AUC")
        ax.legend(loc="lower left")
        ax.set_title("Detectors: oblivious vs adaptive")
        return ax

    def plot_accuracy(self, ax=None):
        """Bars: accuracy of the classifier and each sanitizer, clean and per attack."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 4))
        groups = ["clean"] + list(self.attacks)
        rows = [("undefended", self.undefended)]
        for name, s in self.sanitizers.items():
            if "error" in s:
                continue
            rows.append((name, s["oblivious"]))
            if s.get("adaptive"):
                rows.append((f"{name} (adaptive)", {"clean": np.nan, **s["adaptive"]}))
        width = 0.8 / max(1, len(rows))
        pos = np.arange(len(groups))
        for i, (name, values) in enumerate(rows):
            heights = [values.get(g, np.nan) for g in groups]
            ax.bar(pos + (i - (len(rows) - 1) / 2) * width, heights, width, label=name)
        ax.set_xticks(pos, groups)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize="small")
        ax.set_title("Accuracy: classifier and sanitizers")
        return ax

    def plot_attack_unknown(self, detector, ax=None):
        """Heatmap of a trained detector's attack-unknown AUC matrix."""
        _validation.check_choice("detector", detector, list(self.detectors))
        matrix = self.detectors[detector].get("attack_unknown") or {}
        if not matrix:
            raise ValueError(
                f"Detector {detector!r} has no attack-unknown matrix (only trained "
                "detectors have one)."
            )
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(4.5, 4))
        trains = list(matrix)
        tests = list(next(iter(matrix.values())))
        values = np.array(
            [
                [np.nan if matrix[t][s] is None else matrix[t][s]["auc"] for s in tests]
                for t in trains
            ]
        )
        ax.imshow(values, vmin=0.5, vmax=1.0, cmap="viridis")
        for i in range(len(trains)):
            for j in range(len(tests)):
                text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="white")
        ax.set_xticks(range(len(tests)), [f"test {t}" for t in tests])
        ax.set_yticks(range(len(trains)), [f"train {t}" for t in trains])
        ax.set_title(f"{detector}: attack unknown (AUC)")
        return ax

    def figures(self):
        """`{file name: PNG bytes}` of every figure of the report."""
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
            matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        out = {}

        def render(name, draw):
            fig, ax = plt.subplots(figsize=(6, 5))
            try:
                draw(ax)
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
                out[name] = buffer.getvalue()
            finally:
                plt.close(fig)

        if self.detectors:
            for attack in list(self.attacks) + ["mixed"]:
                if any(self.roc.get((d, attack)) for d in self.detectors):
                    render(f"roc_{_slug(attack)}.png", lambda ax, a=attack: self.plot_roc(a, ax=ax))
            if any(d.get("adaptive") for d in self.detectors.values()):
                render("adaptive.png", lambda ax: self.plot_adaptive(ax=ax))
            for name, d in self.detectors.items():
                if d.get("attack_unknown"):
                    render(
                        f"attack_unknown_{_slug(name)}.png",
                        lambda ax, n=name: self.plot_attack_unknown(n, ax=ax),
                    )
        render("accuracy.png", lambda ax: self.plot_accuracy(ax=ax))
        return out

    # ------------------------------------------------------------------
    # Files

    def to_html(self, figures=None):
        """A self-contained HTML page: the tables and every figure (base64 PNG)."""
        figures = self.figures() if figures is None else figures
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>keras_advguard evaluation report</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
            "table{border-collapse:collapse;margin:1em 0;}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;}"
            "th{background:#eee;} td:first-child{text-align:left;}"
            "img{max-width:48%;margin:4px;}</style></head><body>",
            "<h1>Evaluation report</h1>",
            f"<p>{html.escape(self.summary())}</p>",
        ]
        for title, note, header, rows in self.tables():
            parts.append(f"<h2>{html.escape(title)}</h2>")
            if note:
                parts.append(f"<p>{html.escape(note)}</p>")
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header))
            for row in rows:
                cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</table>")
        if figures:
            parts.append("<h2>Figures</h2>")
            for name, png in figures.items():
                data = base64.b64encode(png).decode("ascii")
                parts.append(
                    f'<img alt="{html.escape(name)}" title="{html.escape(name)}" '
                    f'src="data:image/png;base64,{data}">'
                )
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def save(self, directory, *, adversarial=False):
        """Write report.md, report.json, the PNGs and report.html into `directory`.

        Everything is rendered in memory first, so a failure leaves nothing
        behind. A new `directory` is written under a temporary name beside it
        and renamed into place as a whole; into an existing folder each file
        is written atomically (`_files.write_atomic`), replacing older ones.

        Args:
            directory: the output folder (created if absent).
            adversarial: whether to also write `adversarial.npz`, the images
                of `adversarial()` (report.json never holds them): the key
                `attacks` holds the JSON list of attack names; the fields of
                the `k`-th attack are under `"{k}/x_adv"`, `"{k}/index"`...
                Defaults to `False`.

        Returns:
            A dict `{file name: path}` of the files written.

        Raises:
            ValueError: `directory` names an existing file, or `adversarial=True`
                for a report that keeps no images.
        """
        _validation.check_type("directory", directory, (str, os.PathLike), "a path")
        _validation.check_type("adversarial", adversarial, bool)
        directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(
                f"Argument `directory` names an existing file, not a folder. "
                f"Received: directory={directory!r}"
            )
        if adversarial and self._adversarial is None:
            raise ValueError(
                "Argument `adversarial=True` needs a report that keeps the images: run "
                "`evaluate(..., return_adversarial=True)`. Received: adversarial=True"
            )
        figures = self.figures()
        files = {
            "report.md": self.to_markdown().encode("utf-8"),
            "report.json": (self.to_json() + "\n").encode("utf-8"),
            **figures,
            "report.html": self.to_html(figures).encode("utf-8"),
        }
        if adversarial:
            files["adversarial.npz"] = self._adversarial_npz()
        if not os.path.isdir(directory):
            parent = os.path.dirname(directory)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".{os.path.basename(directory)}.{uuid.uuid4().hex}.tmp")
            os.mkdir(tmp)
            try:
                for name, data in files.items():
                    with open(os.path.join(tmp, name), "wb") as f:
                        f.write(data)
                os.replace(tmp, directory)
            finally:
                if os.path.exists(tmp):
                    shutil.rmtree(tmp)
        else:
            for name, data in files.items():
                _files.write_atomic(os.path.join(directory, name), _writer(data))
        return {name: os.path.join(directory, name) for name in files}
