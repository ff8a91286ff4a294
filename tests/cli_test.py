"""`advguard`: every bad argument is one line and exit code 2 before any work;
the figures of a run match independent numpy references.

One end-to-end `advguard evaluate` run (the module fixture `evaluated`) is in
the default run; the rerun from the attack cache and the end-to-end demo are
`slow` (the demo's wiring is checked fast with a stand-in `evaluate`)."""

import json
import os

import numpy as np
import pytest

from keras_advguard import cli

READ_ONLY = "/sys/advguard-cli-test"  # creating anything under /sys fails, even as root


def _read_only_available():
    try:
        os.mkdir(READ_ONLY)
    except OSError:
        return True
    os.rmdir(READ_ONLY)
    return False


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_model):
    """The digits reference model saved as .keras and the digits data as .npz."""
    from keras_advguard.datasets import load_dataset

    folder = tmp_path_factory.mktemp("cli_inputs")
    model, _ = digits_model
    model.save(folder / "model.keras")
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    np.savez(folder / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return {"model": folder / "model.keras", "data": folder / "data.npz", "folder": folder}


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any work (evaluation or training) starts."""
    import keras_advguard.evaluation
    import keras_advguard.models

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(keras_advguard.evaluation, "evaluate", refuse)
    monkeypatch.setattr(keras_advguard.models, "load_or_train", refuse)


def _bad_npz(folder, **changes):
    from keras_advguard.datasets import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = folder / f"bad_{len(list(folder.iterdir()))}.npz"
    np.savez(path, **arrays)
    return path


def _nan_images(folder):
    from keras_advguard.datasets import load_dataset

    (_, _), (x_test, _) = load_dataset("digits")
    x = x_test.copy()
    x[3, 2, 2, 0] = np.nan
    return _bad_npz(folder, x_test=x)


BAD_EVALUATE = {
    "missing model": (lambda f: ["--model", str(f / "nope.keras")], "--model: no such file"),
    "unreadable model": (
        lambda f: ["--model", str(_write(f / "text.keras", "not a model"))],
        "--model cannot be loaded",
    ),
    "missing data": (lambda f: ["--data", str(f / "nope.npz")], "--data: no such file"),
    "data without a key": (lambda f: ["--data", str(_bad_npz(f, y_test=None))], "missing y_test"),
    "data of another shape": (
        lambda f: ["--data", str(_bad_npz(f, x_test=np.zeros((5, 10, 10, 1), "float32")))],
        "x_test has shape (5, 10, 10, 1)",
    ),
    "data out of range": (
        lambda f: [
            "--data",
            str(
                _bad_npz(
                    f, x_train=np.full((4, 8, 8, 1), 5.0, "float32"), y_train=np.zeros(4, "int64")
                )
            ),
        ],
        "values in [5, 5]",
    ),
    "data with NaN": (lambda f: ["--data", str(_nan_images(f))], "1 NaN or infinite"),
    "labels out of range": (
        lambda f: ["--data", str(_bad_npz(f, y_train=np.full(1437, 12)))],
        "labels in [12, 12]",
    ),
    "out names a file": (lambda f: ["--out", str(_write(f / "a_file", "x"))], "existing file"),
    "num-images beyond the test set": (lambda f: ["--num-images", "361"], "exceeds the 360"),
    "num-images too small": (lambda f: ["--num-images", "2"], "--num-images must be >= 4"),
    "one split": (lambda f: ["--splits", "1"], "--splits must be >= 2"),
    "eps zero": (lambda f: ["--eps", "0"], "--eps must be > 0"),
    "detector-epochs zero": (lambda f: ["--detector-epochs", "0"], "--detector-epochs must be"),
}


def _write(path, text):
    path.write_text(text)
    return path


def _run_bad(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("case", sorted(BAD_EVALUATE))
def test_bad_evaluate_argument_is_one_line_and_exit_2(case, files, tmp_path, capsys, no_work):
    change, expected = BAD_EVALUATE[case]
    argv = {
        "--model": str(files["model"]),
        "--data": str(files["data"]),
        "--out": str(tmp_path / "out"),
    }
    extra = change(tmp_path)
    if extra[0] in argv:
        argv[extra[0]] = extra[1]
        extra = []
    args = ["evaluate", "--cache-dir", str(tmp_path / "cache")]
    args += [item for pair in argv.items() for item in pair] + extra
    code, err = _run_bad(args, capsys)
    assert code == 2, err
    assert err.startswith("advguard: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.skipif(not _read_only_available(), reason="no read-only location to test with")
@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_read_only_locations_are_refused_up_front(flag, files, tmp_path, capsys, no_work):
    args = ["evaluate", "--model", str(files["model"]), "--data", str(files["data"])]
    values = {"--out": str(tmp_path / "out"), "--cache-dir": str(tmp_path / "cache")}
    values[flag] = READ_ONLY + "/sub"
    args += [item for pair in values.items() for item in pair]
    code, err = _run_bad(args, capsys)
    assert code == 2 and err.count("\n") == 1 and f"{flag} cannot be created" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--num-images", "400"], "--num-images 400 exceeds the 360 test images"),
        (["--cache-dir", READ_ONLY], "--cache-dir cannot be created"),
    ],
)
def test_bad_demo_argument_stops_before_training(extra, expected, tmp_path, capsys, no_work):
    if READ_ONLY in extra and not _read_only_available():
        pytest.skip("no read-only location to test with")
    code, err = _run_bad(["demo", "--out", str(tmp_path / "out")] + extra, capsys)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_evaluate_needs_data_or_a_dataset(files, tmp_path, capsys, no_work):
    code, err = _run_bad(
        ["evaluate", "--model", str(files["model"]), "--out", str(tmp_path)], capsys
    )
    assert code == 2 and "needs --data" in err


def test_version_and_help_name_the_real_cache(capsys, monkeypatch, tmp_path):
    from keras_advguard.models import _resolve_cache_dir
    from keras_advguard.version import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"advguard {__version__}"
    monkeypatch.setenv("KERAS_ADVGUARD_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps (at hyphens too)
    assert f"here:{tmp_path / 'home'}" in text and "DIR/models" in text and "DIR/attacks" in text
    # the models really live in DIR/models, where load_or_train looks by default
    assert _resolve_cache_dir(None) == os.path.join(str(tmp_path / "home"), "models")


def test_a_failed_run_leaves_no_out_folder(files, tmp_path, capsys, monkeypatch):
    import keras_advguard.evaluation

    def fails(*args, **kwargs):
        raise ValueError("Argument `x` failed half-way")

    monkeypatch.setattr(keras_advguard.evaluation, "evaluate", fails)
    code = cli.main(
        [
            "evaluate",
            "--model",
            str(files["model"]),
            "--data",
            str(files["data"]),
            "--out",
            str(tmp_path / "out"),
            "--no-cache",
        ]
    )
    assert code == 2 and "failed half-way" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def evaluated(files, tmp_path_factory):
    """One `advguard evaluate` run on the saved model, every digits test image."""
    out = tmp_path_factory.mktemp("cli_run") / "out"
    cache = files["folder"] / "cache"
    argv = [
        "evaluate",
        "--model",
        str(files["model"]),
        "--data",
        str(files["data"]),
        "--defences",
        "mask",
        "--attacks",
        "fgsm",
        "--quick",
        "--detector-epochs",
        "1",
        "--num-images",
        "360",
        "--splits",
        "2",
        "--threat-models",
        "oblivious",
        "--verbose",
        "0",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    return argv, out, cli.main(argv)


def test_evaluate_figures_match_independent_references(evaluated, files, digits_model):
    from keras_advguard import attacks, models, sanitize
    from keras_advguard.datasets import load_dataset

    argv, out, code = evaluated
    assert code == 0
    assert {"report.md", "report.json", "report.html", "accuracy.png"} <= {
        p.name for p in out.iterdir()
    }
    report = json.loads((out / "report.json").read_text())
    model, _ = digits_model
    _, (x_test, y_test) = load_dataset("digits")
    y_pred = np.argmax(model.predict(x_test, verbose=0), axis=1)
    sources = y_pred == y_test
    fgsm = attacks.fgsm(model, x_test, eps=0.1, y=y_test)  # deterministic
    fooled = sources & (fgsm.y_pred_after != y_test)
    assert report["meta"]["n_sources"] == int(sources.sum())
    entry = report["attacks"]["fgsm"]
    assert entry["n_adversarial"] == int(fooled.sum())
    assert entry["success_rate"] == pytest.approx(fooled.sum() / sources.sum())
    assert entry["accuracy"] == pytest.approx(np.mean(fgsm.y_pred_after == y_test))
    assert report["undefended"]["clean"] == pytest.approx(np.mean(sources))
    # the mask sanitizer goes after the reference layer choice of digits_cnn
    sanitized = sanitize(model, list(models.DIGITS_CNN_SANITIZED_LAYERS))
    clean_acc = np.mean(np.argmax(sanitized.predict(x_test, verbose=0), axis=1) == y_test)
    assert report["sanitizers"]["mask"]["oblivious"]["clean"] == pytest.approx(clean_acc)
    # every source is in exactly one test part: the counts add up over the splits
    for name in report["meta"]["baselines"]:
        summary = report["detectors"][name]["oblivious"]["fgsm"]
        assert summary["n_clean"] == int(sources.sum())
        assert summary["n_adversarial"] == int(fooled.sum())
    # the attack went to the cache named by --cache-dir (DIR/attacks), as --help says
    cache = files["folder"] / "cache" / "attacks"
    assert report["attacks"]["fgsm"]["cached"] is False
    assert cache.is_dir() and any(cache.iterdir())


@pytest.mark.slow
def test_rerun_loads_the_attacks_from_the_cache(evaluated, monkeypatch, capsys):
    import functools

    import keras_advguard.attacks

    argv, out, code = evaluated
    assert code == 0
    first = json.loads((out / "report.json").read_text())

    @functools.wraps(keras_advguard.attacks.fgsm)  # same signature, so the same key
    def refuse(*args, **kwargs):
        raise AssertionError("the attack ran again")

    monkeypatch.setattr(keras_advguard.attacks, "fgsm", refuse)
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "attack cache: 1 loaded, 0 computed" in printed
    second = json.loads((out / "report.json").read_text())
    assert second["attacks"]["fgsm"]["cached"] is True
    assert second["attacks"]["fgsm"]["n_adversarial"] == first["attacks"]["fgsm"]["n_adversarial"]


class _StandInReport:
    """What `run` uses of an `EvaluationReport`."""

    def to_markdown(self):
        return "| stand-in |"

    def save(self, folder):
        os.makedirs(folder)
        with open(os.path.join(folder, "report.md"), "w") as f:
            f.write(self.to_markdown())
        return ["report.md"]

    def summary(self):
        return "stand-in summary"


def test_demo_runs_evaluate_on_the_cached_reference_model(
    tmp_path, capsys, monkeypatch, digits_model
):
    """The demo's wiring, fast: `evaluate` gets the digits data, the reference model
    (loaded from the cache, not trained), the digits eps and the cache folder."""
    import keras_advguard.evaluation
    from keras_advguard.datasets import load_dataset

    calls = []

    def stand_in(model, train, test, **kwargs):
        calls.append((model, train, test, kwargs))
        return _StandInReport()

    monkeypatch.setattr(keras_advguard.evaluation, "evaluate", stand_in)
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--num-images", "60", "--attacks", "fgsm", "--verbose", "0"]
    assert cli.main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loaded from cache" in printed and "stand-in summary" in printed
    assert len(calls) == 1
    model, train, test, kwargs = calls[0]
    reference, _ = digits_model
    for got, expected in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    np.testing.assert_array_equal(train[0], x_train)
    np.testing.assert_array_equal(train[1], y_train)
    np.testing.assert_array_equal(test[0], x_test)
    np.testing.assert_array_equal(test[1], y_test)
    assert kwargs["eps"] == 0.1 and kwargs["clip"] == (0.0, 1.0)
    assert kwargs["quick"] is True and kwargs["num_images"] == 60
    assert kwargs["attacks"] == ["fgsm"]
    assert kwargs["cache_dir"] == os.path.join(os.environ["KERAS_ADVGUARD_HOME"], "attacks")
    assert (out / "report.md").read_text() == "| stand-in |"


@pytest.mark.slow
def test_demo_quick_runs_offline_and_states_what_it_did(tmp_path, capsys, digits_model):
    out = tmp_path / "demo"
    code = cli.main(
        [
            "demo",
            "--quick",
            "--detector-epochs",
            "1",
            "--defences",
            "mask",
            "--attacks",
            "fgsm",
            "--num-images",
            "60",
            "--splits",
            "2",
            "--threat-models",
            "oblivious",
            "--verbose",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "loaded from cache" in printed  # the session's cached reference model
    assert "Done: 60 test images attacked" in printed and "1 attack(s): fgsm" in printed
    assert "success rate" in (out / "report.md").read_text()
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", ["demo", "evaluate"])
def test_missing_dataset_file_names_the_file_and_folder(
    command, files, tmp_path, monkeypatch, capsys, no_work
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    args = [command, "--dataset", "mnist", "--out", str(tmp_path / "out")]
    if command == "evaluate":
        args += ["--model", str(files["model"])]
    code, err = _run_bad(args, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "mnist.npz" in err and "empty_keras_home" in err
    assert not (tmp_path / "out").exists()
