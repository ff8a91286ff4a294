import pytest

from keras_advguard import cli


def test_demo_quick_runs_offline_and_writes_outputs(tmp_path, capsys, digits_model):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--quick", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "loaded from cache" in printed  # reuses the session's cached model
    assert "FGSM" in printed and "PGD" in printed and "TPR @ 5% FPR" in printed
    png = out / "roc_max_softmax.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "success rate" in (out / "report.md").read_text()


def test_demo_report_values(tmp_path, digits_model):
    args = cli._build_parser().parse_args(["demo", "--quick", "--out", str(tmp_path)])
    report = cli.run_demo(args)
    assert report["clean_accuracy"] > 0.9
    for name in ("FGSM", "PGD"):
        entry = report["attacks"][name]
        assert 0.0 <= entry["success_rate"] <= 1.0
        assert entry["mean_linf"] <= 0.1 + 1e-6
    # PGD is at least as strong as FGSM at the same eps on a trained model.
    assert report["attacks"]["PGD"]["success_rate"] >= report["attacks"]["FGSM"]["success_rate"]


def test_demo_missing_mnist_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    code = cli.main(["demo", "--dataset", "mnist", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "mnist.npz" in err and "empty_keras_home" in err


def test_bad_arguments_exit_with_usage(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--dataset", "imagenet"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["demo", "--num-images", "2", "--out", str(tmp_path / "never")]) == 2
