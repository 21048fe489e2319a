"""The cells scheduler backs off when cells do not fit on a GPU together.

CUDA's out-of-memory error cannot happen on this CPU machine, so the children here are small scripts
that behave like a cell on a GPU with room for two: each takes one of two memory slots (a file created
exclusively) or, when both are taken, writes torch's out-of-memory error to its train.log and exits 1.
"""

from __future__ import annotations

import sys
import textwrap

from mupctl.diagnostics.scheduler import run_jobs

CELL = textwrap.dedent("""
    import os, sys, time
    run_dir, slots, fail = sys.argv[1], sys.argv[2], sys.argv[3]
    for i in range(2):
        try:
            fd = os.open(os.path.join(slots, f"slot{i}"), os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        os.close(fd)
        time.sleep(2.0)  # long enough that every cell has started and looked for room
        os.remove(os.path.join(slots, f"slot{i}"))
        sys.exit(1 if fail == "fail" else 0)
    with open(os.path.join(run_dir, "train.log"), "a") as log:
        log.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\\n")
    sys.exit(1)
""")


def job(tmp_path, name: str, slots, fail: str = "ok", retry: bool = True) -> dict:
    argv = [sys.executable, "-c", CELL, str(tmp_path / name), str(slots), fail]
    return {"id": name, "dir": str(tmp_path / name), "argv": argv} | ({"retry_argv": argv} if retry else {})


def test_out_of_memory_cells_are_queued_again_and_the_gpu_takes_fewer_at_a_time(tmp_path, capsys):
    slots = tmp_path / "slots"
    slots.mkdir()
    jobs = [job(tmp_path, f"c{i}", slots) for i in range(4)]
    run_jobs(jobs, parallel=4, groups=[["0"]])
    assert [j["rc"] for j in jobs] == [0, 0, 0, 0]  # every cell ran in the end
    retried = [j for j in jobs if j.get("tries")]
    assert len(retried) == 2 and all(j["tries"] == 1 for j in retried)  # the two that found no room, once each
    err = capsys.readouterr().err
    assert err.count("out of GPU memory on GPU(s) 0; queued again") == 2
    assert "at most 2 cell(s) at a time there" in err and "at most 1 cell(s)" not in err
    for j in retried:  # the retry's log follows the failed attempt's, which stays
        assert "CUDA out of memory" in (tmp_path / j["id"] / "train.log").read_text()


def test_other_failures_cells_without_a_retry_and_cpu_cells_are_not_run_again(tmp_path, capsys):
    slots = tmp_path / "slots"
    slots.mkdir()
    crashed = job(tmp_path, "crashed", slots, fail="fail")  # finds room, then fails otherwise
    run_jobs([crashed], parallel=1, groups=[["0"]])
    (slots / "slot0").touch()  # from here on the GPU is full: every cell runs out of memory
    (slots / "slot1").touch()
    once = job(tmp_path, "once", slots, retry=False)
    run_jobs([once], parallel=1, groups=[["0"]])
    cpu = job(tmp_path, "cpu", slots)  # no GPU groups: the text is not a GPU's error
    run_jobs([cpu], parallel=1, groups=[])
    assert [j["rc"] for j in (crashed, once, cpu)] == [1, 1, 1]
    assert not any("tries" in j for j in (crashed, once, cpu))
    assert "CUDA out of memory" in (tmp_path / "once" / "train.log").read_text()
    assert "queued again" not in capsys.readouterr().err
