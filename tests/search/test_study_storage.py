"""The run's study file (`toast.search._storage`): a journal for new runs, an old run's `study.db` kept, the
journal shared between processes, and a damaged journal refused in one line before anything runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from toast.errors import SettingsError
from toast.search import load_run_study
from toast.search._preflight import check_study
from toast.search._storage import open_storage, storage_kind, study_file

optuna = pytest.importorskip("optuna")


def _study(out, storage=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name="toast-search",
        storage=storage or open_storage(out),
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )


def test_a_new_run_gets_a_journal_and_an_old_run_keeps_its_study_db(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    assert study_file(new) is None and storage_kind(new) == "journal"
    _study(new).optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=2)
    assert study_file(new) == new / "study.journal" and not (new / "study.db").exists()

    _study(old, optuna.storages.RDBStorage(f"sqlite:///{old / 'study.db'}")).optimize(
        lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=2
    )
    assert storage_kind(old) == "sqlite" and isinstance(open_storage(old), optuna.storages.RDBStorage)
    assert len(load_run_study(old).trials) == 2
    assert not (old / "study.journal").exists()
    with pytest.raises(FileNotFoundError, match="holds no study"):
        load_run_study(tmp_path / "none")


CHILD = textwrap.dedent(
    """
    import sys
    import optuna
    from toast.runners import set_user_attrs, study_storage, trial_id
    from toast.search import load_run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_run_study(sys.argv[1])
    assert [t.user_attrs["by"] for t in study.trials] == ["parent"], study.trials
    trial = study.ask()
    set_user_attrs(study_storage(study), trial_id(trial), {"by": "child", "accuracy": 50.0})
    study.tell(trial, (50.0, 1.0))
    """
)


def test_the_journal_is_shared_across_processes(tmp_path):
    """What one process appends, another reads on its next access (a Ray driver and a dashboard, two runners)."""
    study = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("by", "parent")
    study.tell(trial, (90.0, 2.0))
    subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], check=True, timeout=120)
    got = [(t.number, t.state.name, t.values, t.user_attrs.get("by")) for t in study.get_trials(deepcopy=False)]
    assert got == [(0, "COMPLETE", [90.0, 2.0], "parent"), (1, "COMPLETE", [50.0, 1.0], "child")]


def _journal_lines(tmp_path) -> bytes:
    out = tmp_path / "good"
    out.mkdir()
    _study(out).optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=2)
    return (out / "study.journal").read_bytes()


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda good: b"this is not a journal\n" * 3, "unreadable as an Optuna journal entry"),
        (lambda good: b'{"note": "json lines"}\n', "unreadable as an Optuna journal entry"),
        (
            lambda good: b'{"op_code": 8, "worker_id": "w", "trial_id": 0, "user_attr": {"a": 1}}\n',
            "holds no Optuna study",
        ),
    ],
    ids=["not json", "json of something else", "no study"],
)
def test_a_damaged_journal_is_refused_in_one_line_and_left_as_it_is(tmp_path, damage, phrase):
    path = tmp_path / "run" / "study.journal"
    path.parent.mkdir()
    path.write_bytes(damage(_journal_lines(tmp_path)))
    before = path.read_bytes()
    with pytest.raises(SettingsError, match=phrase) as info:
        check_study(path)
    assert "\n" not in str(info.value) and "not an Optuna study journal" in str(info.value)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["study.journal"]


def test_a_good_or_empty_journal_passes(tmp_path):
    path = tmp_path / "run" / "study.journal"
    path.parent.mkdir()
    path.write_bytes(b"")
    check_study(path)  # a run stopped before its study was created
    path.write_bytes(_journal_lines(tmp_path))
    check_study(path)


def test_a_journal_cut_mid_line_is_recovered_up_to_its_last_whole_record(tmp_path, capsys):
    """A kill or a full disk in the middle of a write leaves a cut last line: the next run cuts it off (keeping the
    bytes beside it), says so, and resumes with every whole record."""
    out = tmp_path / "run"
    out.mkdir()
    whole = _journal_lines(tmp_path)
    (out / "study.journal").write_bytes(whole + b'{"op_code": 5, "worker_id": "w", "tri')
    check_study(out / "study.journal")  # the preflight passes it
    study = _study(out)
    assert "recovered up to its last whole record" in capsys.readouterr().err
    assert (out / "study.journal").read_bytes().startswith(whole)  # then Optuna's own appends
    assert (out / "study.journal.cut-tail").read_bytes() == b'{"op_code": 5, "worker_id": "w", "tri'
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    study.optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=1)
    assert len(load_run_study(out).trials) == 3


def test_a_write_that_fails_part_way_leaves_the_journal_as_it_was(tmp_path, monkeypatch):
    """ENOSPC after half a record: the file is cut back to its size before the write, the error is one line, and the
    study reads back whole; once the disk has room the same study goes on."""
    import errno

    from toast.search import _storage

    out = tmp_path / "run"
    out.mkdir()
    study = _study(out)
    study.optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=2)
    before = (out / "study.journal").read_bytes()

    def full_disk(path, payload):
        with open(path, "ab") as f:
            f.write(payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_storage, "_append", full_disk)
    with pytest.raises(_storage.StudyWriteError) as info:
        study.ask()
    assert "\n" not in str(info.value) and "No space left on device" in str(info.value)
    assert (out / "study.journal").read_bytes() == before
    monkeypatch.undo()
    again = _study(out)
    again.optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=1)
    assert [t.state.name for t in again.get_trials()] == ["COMPLETE"] * 3


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0, reason="needs root")
def test_a_real_full_disk_leaves_the_journal_whole(tmp_path):
    """On a 1 MB tmpfs filled to the last byte, a write fails with ENOSPC and the journal stays readable."""
    import os

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mount / "run"
        out.mkdir()
        study = _study(out)
        study.optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=2)
        before = (out / "study.journal").read_bytes()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte
        try:
            for size in (65536, 4096, 1):
                try:
                    while os.write(fd, b"\0" * size):
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)
        from toast.runners import run_local
        from toast.search._storage import StudyWriteError

        with pytest.raises(StudyWriteError, match="No space left"):  # the runner raises it, not Optuna's assertion
            for _ in range(50):
                run_local(study, lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=1)
        assert (out / "study.journal").read_bytes().startswith(before)
        assert (out / "study.journal").read_bytes().endswith(b"\n")
        (mount / "filler").unlink()
        assert len(load_run_study(out).trials) >= 2
    finally:
        subprocess.run(["umount", str(mount)], check=False)
