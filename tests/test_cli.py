"""What a new user meets first: a fast --help, clear defaults and messages, --device on every network verb."""
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import assert_one_line_error, copy_run  # noqa: E402

from ensemble.cli import main

COMMANDS = ([], ["data", "inspect"], ["data", "clean"], ["train"], ["baseline"], ["fuse"], ["evaluate"],
            ["predict"], ["export"], ["score"], ["run"])


def test_help_loads_no_torch():
    """`ensemble --help` and every command's --help answer without importing torch (the slow part)."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ensemble.cli import main\n"
        f"for args in {COMMANDS!r}:\n"
        "    result = CliRunner().invoke(main, [*args, '--help'])\n"
        "    assert result.exit_code == 0 and 'Usage' in result.output, (args, result.output)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_strategy_choices_are_the_fusion_registry():
    """The CLI spells the strategies out (no torch at start-up); they must be the registry's, in its order."""
    import fusion
    from ensemble.cli import STRATEGY_NAMES

    assert STRATEGY_NAMES == fusion.STRATEGIES
    fuse = next(p for p in main.commands["fuse"].params if p.name == "strategy")
    assert list(fuse.type.choices) == ["all", *fusion.STRATEGIES]
    for verb in ("predict", "export"):  # checked against the run, which also serves baseline, replicas, control
        served = next(p for p in main.commands[verb].params if p.name == "strategy")
        assert all(name in served.help for name in fusion.STRATEGIES), verb


def test_predict_without_run_says_it_uses_the_reference(tmp_path, subset_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/default of the developer's here
    out = tmp_path / "submission.csv"
    result = CliRunner().invoke(main, ["predict", "--images", str(subset_path), "--out", str(out), "--device", "cpu",
                                       "--engine", "torch"])  # torch: no graph to export, faster
    assert result.exit_code == 0, result.output
    assert "no --run given and no run in runs/default yet: using the shipped reference run" in result.output
    assert "models/reference" in result.output


def test_missing_data_file_message_is_the_same_everywhere(tmp_path):
    missing = str(tmp_path / "missing.npz")
    inspect = CliRunner().invoke(main, ["data", "inspect", "--data", missing])
    predict = CliRunner().invoke(main, ["predict", "--data", missing, "--out", str(tmp_path / "s.csv")])
    assert_one_line_error(inspect, "missing.npz: file not found")
    assert_one_line_error(predict, "missing.npz: file not found")
    assert inspect.stderr.splitlines()[-1] == predict.stderr.splitlines()[-1]  # the same message
    images = CliRunner().invoke(main, ["predict", "--images", missing, "--out", str(tmp_path / "s.csv")])
    assert_one_line_error(images, "--images expects an image file, a folder of images or an .npz")


def test_training_log_names_the_validation_tiles_scored(tmp_path, subset_path):
    result = CliRunner().invoke(main, ["train", "--data", str(subset_path), "--run", str(tmp_path / "run"),
                                       "--members", "sand", "--epochs", "1", "--width", "4",
                                       "--samples-per-epoch", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # the quick preset scores 384 validation tiles per epoch, or all of them when there are fewer
    line = next(line for line in result.output.splitlines() if line.startswith("training sand"))
    scored, _, total = line.split("validating on ")[1].split(" validation")[0].partition(" of ")
    assert int(scored) == min(384, int(total))
    # issue 13: every epoch records (and logs) the share of its time spent on the validation pass
    assert "(validation " in next(line for line in result.output.splitlines() if "[sand] epoch 1/1" in line)
    (epoch,) = json.loads((tmp_path / "run" / "members" / "sand" / "metrics.json").read_text())["history"]
    assert 0 < epoch["val_seconds"] < epoch["seconds"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", [["predict"], ["evaluate"], ["fuse"], ["train"], ["run"]])
def test_device_cuda_without_a_gpu_is_refused(tmp_path, subset_path, command):
    args = [*command, "--device", "cuda", "--data", str(subset_path)]
    if command[0] in ("train", "fuse", "run"):
        args += ["--run", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert_one_line_error(result, "--device cuda: no CUDA device is available")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_device_cpu_runs_predict_and_evaluate(tmp_path, subset_path, tiny_run):
    from ensemble import api

    tiny_run = copy_run(tiny_run, tmp_path)
    api.fuse(run=str(tiny_run), strategy="argmax", data=str(subset_path), device="cpu", quiet=True)
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(main, ["predict", "--run", str(tiny_run), "--strategy", "argmax", "--data",
                                       str(subset_path), "--out", str(out), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tiny_run), "--data", str(subset_path), "--out",
                                       str(tmp_path / "ev"), "--device", "cpu", "--quiet", "--cross-fit", "0"])
    assert result.exit_code == 0, result.output


def test_run_folder_file_names_live_in_one_module():
    """Every run-folder file name is spelled in ensemble/core/runfolder.py only."""
    from ensemble.core.locations import PROJECT_ROOT
    from ensemble.core.runfolder import BEST, CACHE_IDS, CACHE_LOGITS, CACHE_META, CONFIG, LATEST, MANIFEST, METRICS

    names = (BEST, LATEST, METRICS, CONFIG, MANIFEST, CACHE_LOGITS, CACHE_IDS, CACHE_META)
    sources = [p for package in ("ensemble", "members", "fusion") for p in (PROJECT_ROOT / package).rglob("*.py")]
    spelled = {str(p.relative_to(PROJECT_ROOT)): [n for n in names if f'"{n}"' in p.read_text()] for p in sources}
    assert {path for path, found in spelled.items() if found} == {"ensemble/core/runfolder.py"}


def test_one_predict_parses_the_manifest_once(tmp_path, subset_path, monkeypatch):
    from ensemble import api
    from ensemble.core import runfolder

    parsed = []
    read_json = runfolder.RunFolder.read_json

    def counting(self, path):
        if path.name == runfolder.MANIFEST:
            parsed.append(path)
        return read_json(self, path)

    monkeypatch.setattr(runfolder.RunFolder, "read_json", counting)
    runfolder._MANIFESTS.clear()
    api.predict(images=str(subset_path), out=str(tmp_path / "s.csv"), device="cpu", quiet=True)
    assert len(parsed) == 1


def test_train_defaults_keep_every_core_busy_in_every_round(monkeypatch):
    """Issue 13: members train in parallel by default, never more jobs than networks, and no round of
    fewer networks than cores (5 on 2 cores: 3 at once, then 2, not 2, 2 and 1 alone)."""
    from ensemble import train

    five = ["background", "soil", "bedrock", "sand", "big_rock"]
    monkeypatch.setattr(train, "machine_cores", lambda: 2)
    assert train.default_jobs(five) == 3
    assert train.default_jobs(five[:4]) == 2
    assert train.default_jobs(["sand"]) == 1
    assert train.default_jobs(["soil", "sand"], stacked=True) == 1
    monkeypatch.setattr(train, "machine_cores", lambda: 1)
    assert train.default_jobs(five) == 1
    monkeypatch.setattr(train, "machine_cores", lambda: 4)
    assert train.default_jobs(five) == 5
    monkeypatch.setattr(train, "machine_cores", lambda: 16)
    assert train.default_jobs(five) == 5


def test_last_round_of_members_shares_every_core(monkeypatch):
    """Five members on two workers: four with one thread each, the fifth (alone in the last round) with both."""
    import members.parallel as parallel

    monkeypatch.setattr(parallel, "machine_cores", lambda: 2)
    assert parallel.task_threads(5, 2) == [1, 1, 1, 1, 2]
    assert parallel.task_threads(4, 2) == [1, 1, 1, 1]
    assert parallel.task_threads(5, 1) == [2] * 5
    monkeypatch.setattr(parallel, "machine_cores", lambda: 16)
    assert parallel.task_threads(5, 5) == [3] * 5
    assert parallel.task_threads(6, 4) == [4, 4, 4, 4, 8, 8]


def test_run_trains_every_network_of_the_run_in_one_dispatch(tmp_path, subset_path, monkeypatch):
    """`ensemble run` hands the members, the baseline, its replicas and the control to one plan with the CLI's
    backend and scheduler; a member that failed in it stops the run with one line naming it."""
    from ensemble import train

    calls = []

    def dispatched(names, *, run, data=None, options=None, log=print):
        calls.append((list(names), options))
        return [{"name": name, "failed": True, "error": "RuntimeError: stopped by the test"} for name in names]

    monkeypatch.setattr(train, "train_networks", dispatched)
    result = CliRunner().invoke(main, ["run", "--data", str(subset_path), "--run", str(tmp_path / "run"),
                                       "--replicas", "2", "--control", "--backend", "dask", "--scheduler",
                                       "tcp://127.0.0.1:1", "--width", "4", "--epochs", "1", "--set", "lr=0.01"])
    assert_one_line_error(result, "members failed: background (RuntimeError: stopped by the test); soil (")
    *progress, _ = result.stderr.strip().splitlines()  # the steps said so far, then the one error line
    ((names, options),) = calls
    assert names == ["background", "soil", "bedrock", "sand", "big_rock", "baseline", "baseline_1",
                     *(f"control_{i}" for i in range(5))]
    assert (options.backend, options.scheduler, options.width, options.epochs, options.overrides) == \
        ("dask", "tcp://127.0.0.1:1", 4, 1, ("lr=0.01",))
    for step in ("== 1/4 members", "== 2/4 multiclass baseline", "== 2b/4 ensembling control"):
        assert step in "\n".join(progress)
    assert "==" not in result.stdout  # progress goes to stderr, results to stdout


def test_every_option_is_declared_once():
    """Each flag of the ``ensemble`` command has one ``click.option`` call in ``ensemble/cli/``: verbs that share an
    option share its declaration (a group of ``ensemble/cli/options.py``)."""
    import ast
    import collections

    from ensemble.core.locations import PROJECT_ROOT

    declared = collections.defaultdict(list)
    for path in sorted((PROJECT_ROOT / "ensemble" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "option":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                        for flag in arg.value.split("/"):
                            declared[flag].append(f"{path.name}:{node.lineno}")
    assert len(declared) > 40  # the scan sees the options
    twice = {flag: where for flag, where in declared.items() if len(where) > 1}
    assert not twice, f"options declared more than once: {twice}"
