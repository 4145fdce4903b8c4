"""The manifest every stage writes: the same keys for the same things."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from newsbias import io
from newsbias.cli import main
from newsbias.config import BaselineConfig, CvConfig
from newsbias.io import stage_manifest, usable_cpus, write_json, write_jsonl


def test_stage_manifest_keys(monkeypatch):
    monkeypatch.setattr(io, "_INVOKED", {})
    m = stage_manifest("cv", {"cv": CvConfig(), "baseline": BaselineConfig()}, 0.0, extra_key=1)
    assert m["stage"] == "cv" and m["command"] == "newsbias cv" and m["config"]["cv"]["folds"] == 5
    assert m["versions"]["pydantic"] and m["started"] == "1970-01-01T00:00:00+00:00" and m["seconds"] > 0
    assert m["extra_key"] == 1 and json.dumps(m)


def test_baseline_manifest_has_the_shared_keys(planted_data_dir, tmp_path):
    from newsbias.baseline import run_baseline

    run_baseline(BaselineConfig(data=str(planted_data_dir), out_dir=str(tmp_path), models=["majority"]))
    m = json.loads((tmp_path / "majority.manifest.json").read_text())
    assert {"stage", "config", "versions", "git_commit", "started", "seconds"} <= set(m) and m["model"] == "majority"


def test_manifest_records_the_command_line_that_ran_it(planted_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_INVOKED", {})
    argv = ["baseline", "--data", str(planted_data_dir), "--out", str(tmp_path / "my preds"), "baseline.models=[majority]"]
    assert main(argv) == 0
    m = json.loads((tmp_path / "my preds" / "majority.manifest.json").read_text())
    assert m["command"] == shlex.join(["newsbias", *argv]) and "'" in m["command"]
    assert stage_manifest("train", {}, 0.0)["command"] == "newsbias train"  # a stage the command line did not name


def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": 2}])

    def rows():
        yield {"a": 3}
        raise KeyboardInterrupt  # a user's Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, rows())
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]
    write_json(tmp_path / "m.json", {"x": "é"})
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "x": "é"\n}\n'


def test_a_symlinked_output_is_written_through(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "preds.jsonl"
    write_jsonl(target, [{"a": 1}] * 3)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_jsonl(link, [{"a": 2}])
    assert link.is_symlink() and target.read_text() == '{"a": 2}\n'


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    """prep's workers outlived a `kill -9` of prep, blocked on a pipe nobody read, holding their memory."""
    import signal
    import subprocess
    import sys
    import time

    if sys.platform != "linux":
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from newsbias.io import die_with_parent\n"
        "def pid(_):\n"
        "    time.sleep(0.2)\n"
        "    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),))\n"
        "    print(' '.join(map(str, sorted(set(pool.map(pid, range(8)))))), flush=True)\n"
        "    pool.submit(time.sleep, 60)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert workers
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][0] != "Z"  # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while time.time() < deadline and any(running(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if running(p)]


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 1
    assert BaselineConfig().jobs == 1  # the default number of worker processes follows it


def test_a_run_killed_between_the_two_moves_of_atomic_dir_gets_its_earlier_output_back(tmp_path):
    out = tmp_path / "prep"
    dead = 2 ** 22 + 12345  # above Linux's default pid_max: no process has it
    old = tmp_path / f".prep.old-{dead}"
    old.mkdir()
    (old / "train.jsonl").write_text("earlier output")
    (tmp_path / f".prep.tmp-{dead}").mkdir()
    assert io.remove_dead_leftovers(out) == [tmp_path / f".prep.tmp-{dead}"]
    assert (out / "train.jsonl").read_text() == "earlier output" and not old.exists()
    old.mkdir()  # with an output in place, a dead run's .old copy is a leftover
    assert io.remove_dead_leftovers(out) == [old] and not old.exists()


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / f".out.jsonl.tmp-{os.getpid()}").symlink_to(victim)
    write_jsonl(tmp_path / "out.jsonl", [{"id": "x"}])
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "out.jsonl").is_symlink() and (tmp_path / "out.jsonl").read_text() == '{"id": "x"}\n'


def test_the_commit_recorded_is_newsbias_own_never_a_surrounding_projects(tmp_path):
    import importlib.util
    import shutil
    import subprocess

    from newsbias import io as nbio

    here = nbio.git_commit()
    if shutil.which("git") and (Path(nbio.__file__).resolve().parents[2] / ".git").exists():
        assert here and len(here.split("-")[0]) == 40
    project = tmp_path / "project"  # a user's repository, holding newsbias installed in a venv or as a copy
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "theirs"], check=True)
    for where in (".venv/lib/site-packages/newsbias", "vendor/newsbias-src/src/newsbias"):
        installed = project / where
        installed.mkdir(parents=True)
        shutil.copy(nbio.__file__, installed / "io.py")
        spec = importlib.util.spec_from_file_location(f"installed_io_{len(where)}", installed / "io.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.git_commit() is None, where
