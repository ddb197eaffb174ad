"""One event must not take a run down: dead workers, stuck reads, empty or failed inputs,
unwritable or full folders, a second run on the same output, an export killed mid-way.

Events are real where the machine allows it: workers are killed with SIGKILL, FIFOs are real
FIFOs, a full disk is a tiny tmpfs mounted in a private mount namespace (`unshare`), two runs
are two processes. Only *when* a decode is slow or dies is injected (a wrapped decode_image).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ducho_fast.modalities.image as image_modality
from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main
from ducho_fast.core.errors import ExtractionError, OutputError
from ducho_fast.engine.state import read_failures
from ducho_fast.modalities.files import WORKER_DIED

ROOT = Path(__file__).resolve().parents[1]
QUIET = RunOptions(progress=False, shard_size=32, item_timeout=5)
GUARD_S = 30  # how long an injected stall lasts before it gives up (only a broken run waits)


def run_images(model: Path, images: Path, output: Path, options: RunOptions = QUIET, **job):
    job = SingleModelJob(str(model), output, images=images, **job)
    results = extract_single(job, options)
    folder = output / model.name / "image_embeds"
    ids = (folder / "ids.txt").read_text().splitlines()
    return results[0], ids, np.load(folder / "features.npy")


def photo_folder(tmp_path: Path, photos: list[Path], extra: dict[str, Path]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    for name, source in extra.items():
        shutil.copy(source, folder / name)
    return folder


def failures_by_id(output: Path) -> dict[str, str]:
    return {f.item_id: f.error for f in read_failures(output / "failures.tsv")}


def artifacts_in(cache: Path) -> list[Path]:
    folder = cache / "artifacts"
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


# --- 1. a decode worker killed ------------------------------------------------------------


def killing_decode(main_pid: int, marker_dir: Path):
    """decode_image that SIGKILLs its worker process for `kill-always*` files, and for
    `kill-once*` files the first time only (a marker file remembers it across processes)."""
    decode = image_modality.decode_image

    def wrapped(source, *args):
        name = Path(source).name
        if os.getpid() != main_pid and name.startswith("kill-"):
            marker = marker_dir / name
            if name.startswith("kill-always") or not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return decode(source, *args)

    return wrapped


def test_a_killed_worker_costs_only_the_item_that_kills_it(
    tiny_clip, colour_photos, tmp_path, monkeypatch
):
    photos = colour_photos[:5]
    folder = photo_folder(
        tmp_path, photos, {"kill-once.png": photos[0], "kill-always.png": photos[1]}
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setattr(image_modality, "decode_image", killing_decode(os.getpid(), markers))
    options = RunOptions(progress=False, shard_size=4, workers=2)
    result, ids, features = run_images(tiny_clip, folder, tmp_path / "out", options, batch_size=2)
    assert (markers / "kill-once.png").exists()  # a worker really died on it
    assert failures_by_id(tmp_path / "out") == {"kill-always": WORKER_DIED}
    assert sorted(ids) == sorted([p.stem for p in photos] + ["kill-once"])
    # the retried items' features are those of a run in which no worker died
    _, inline_ids, inline = run_images(
        tiny_clip, folder, tmp_path / "inline", RunOptions(progress=False, workers=0)
    )
    rows = [inline_ids.index(i) for i in ids]
    np.testing.assert_array_equal(features, inline[rows])
    assert result.succeeded == len(photos) + 1 and len(result.failures) == 1


# --- 2. timeouts in every decoding path ----------------------------------------------------


class Stall:
    """decode_image that stalls on `slow*` files until released (or GUARD_S passed, which
    only a run without a working timeout reaches: `overran` then says so)."""

    def __init__(self):
        self.release = threading.Event()
        self.overran = False
        self.decode = image_modality.decode_image

    def __call__(self, source, *args):
        if Path(source).name.startswith("slow") and not self.release.wait(GUARD_S):
            self.overran = True
        return self.decode(source, *args)


@pytest.fixture
def stall(monkeypatch):
    stalled = Stall()
    monkeypatch.setattr(image_modality, "decode_image", stalled)
    yield stalled
    stalled.release.set()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache: models are exported on the fly, so the export decodes a sample."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(cache))
    return cache


def test_item_timeout_holds_in_inline_decoding_and_in_the_export_sample(
    tiny_clip, colour_photos, tmp_path, stall, fresh_cache
):
    folder = photo_folder(tmp_path, colour_photos[:3], {"slow.png": colour_photos[3]})
    options = RunOptions(progress=False, workers=0, item_timeout=1)
    _, ids, _ = run_images(tiny_clip, folder, tmp_path / "out", options)
    assert not stall.overran  # neither the export's sample nor the run waited for it
    assert failures_by_id(tmp_path / "out") == {"slow": "ItemTimeoutError: timed out after 1 s"}
    assert sorted(ids) == sorted(p.stem for p in colour_photos[:3])
    assert artifacts_in(fresh_cache)  # the model was exported on the fly


def test_the_running_process_never_arms_sigalrm_its_forked_decoders_do():
    """A SIGALRM delivered into the process that hosts the runtimes' thread pools killed a
    test session with SIGSEGV: there a stuck decode is abandoned in a daemon thread instead.
    A forked decode worker (no pools) still interrupts a stuck read with SIGALRM."""
    from ducho_fast.modalities.files import SS_DISABLE, ItemTimeoutError, SignalStack, within

    timers = []
    assert within(5, lambda: timers.append(signal.getitimer(signal.ITIMER_REAL))) is None
    assert timers == [(0.0, 0.0)]  # no alarm armed around the call
    release = threading.Event()
    with pytest.raises(ItemTimeoutError, match=r"timed out after 0\.2 s"):
        within(0.2, lambda: release.wait(GUARD_S))
    release.set()
    child = os.fork()
    if child == 0:  # a decode worker: the stuck call is interrupted by the alarm itself, its
        # handler on the process's own stack, not on an alternate one inherited from the parent
        libc = ctypes.CDLL(None)
        inherited = ctypes.create_string_buffer(1 << 16)
        libc.sigaltstack(ctypes.byref(SignalStack(ctypes.addressof(inherited), 0, 1 << 16)), None)
        try:
            within(0.2, lambda: signal.getitimer(signal.ITIMER_REAL)[0] > 0 and time.sleep(GUARD_S))
        except ItemTimeoutError:
            now = SignalStack()
            libc.sigaltstack(None, ctypes.byref(now))
            os._exit(7 if now.ss_flags == SS_DISABLE else 2)
        os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 7


class FifoGuard:
    """Opens a FIFO's write end every GUARD_S until stopped: a reader blocked in open() (a
    run without the check) is then released, and `had_to` says one was blocked."""

    def __init__(self, fifo: Path):
        self.fifo, self.stop, self.had_to = fifo, threading.Event(), False
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.stop.wait(GUARD_S):
            self.had_to = True
            with contextlib.suppress(OSError):  # no reader blocked on it
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_fifo_is_recorded_and_never_opened(workers, tiny_clip, colour_photos, tmp_path, request):
    if workers == 0:  # and the model exported on the fly, whose sample would open it too
        request.getfixturevalue("fresh_cache")
    folder = photo_folder(tmp_path, colour_photos[:3], {})
    os.mkfifo(folder / "pipe.png")
    guard = FifoGuard(folder / "pipe.png")
    try:
        options = RunOptions(progress=False, workers=workers, item_timeout=5)
        _, ids, _ = run_images(tiny_clip, folder, tmp_path / "out", options)
    finally:
        guard.close()
    assert not guard.had_to
    assert "a FIFO, not a regular file" in failures_by_id(tmp_path / "out")["pipe"]
    assert sorted(ids) == sorted(p.stem for p in colour_photos[:3])


# --- 3. empty inputs, every item failed ---------------------------------------------------


def cli(*args: str):
    return CliRunner().invoke(main, ["extract", "--no-progress", *args])


@pytest.mark.parametrize("kind", ["empty folder", "header-only table"])
def test_an_empty_input_is_an_error_before_any_model_opens(kind, tiny_clip, tmp_path, fresh_cache):
    if kind == "empty folder":
        (tmp_path / "images").mkdir()
        source = ["--images", str(tmp_path / "images")]
    else:
        (tmp_path / "items.tsv").write_text("id\ttext\n")
        source = ["--texts", str(tmp_path / "items.tsv")]
    outcome = cli("--model", str(tiny_clip), "--output", str(tmp_path / "out"), *source)
    assert outcome.exit_code == 1
    assert outcome.output.count("\n") == 1 and "has no items" in outcome.output
    assert "Traceback" not in outcome.output
    assert artifacts_in(fresh_cache) == []  # nothing was exported: no model opened


def test_every_item_failing_writes_failures_and_exits_1(tiny_clip, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (folder / name).write_bytes(b"not an image at all")
    outcome = cli(
        "--model", str(tiny_clip), "--output", str(tmp_path / "out"), "--images", str(folder)
    )
    assert outcome.exit_code == 1
    assert outcome.output.count("\n") == 1 and "all 3 items failed" in outcome.output
    assert sorted(failures_by_id(tmp_path / "out")) == ["a", "b", "c"]


def test_items_that_all_fail_in_listing_open_no_model(tiny_clip, tmp_path, fresh_cache):
    table = tmp_path / "items.tsv"
    table.write_text("id\ttext\n../up\tred dress\nblank\t  \n")
    outcome = cli(
        "--model", str(tiny_clip), "--output", str(tmp_path / "out"), "--texts", str(table)
    )
    assert outcome.exit_code == 1 and "all 2 items failed" in outcome.output
    assert sorted(failures_by_id(tmp_path / "out")) == ["../up", "blank"]
    assert artifacts_in(fresh_cache) == []


# --- 4. preflight of output and cache folders ---------------------------------------------


def test_an_output_path_that_is_a_file_is_refused_before_models_open(
    tiny_clip, colour_photos, tmp_path, fresh_cache
):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match=r"taken is a file, not a folder"):
        run_images(tiny_clip, folder, tmp_path / "taken" / "out")
    assert artifacts_in(fresh_cache) == []


def test_outputs_under_proc_are_refused(tiny_clip, colour_photos, tmp_path):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    with pytest.raises(OutputError, match=r"under /proc"):
        run_images(tiny_clip, folder, Path("/proc/self/ducho-out"))


def test_a_cache_that_is_a_file_is_refused(tiny_clip, colour_photos, tmp_path, monkeypatch):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OutputError, match=r"cache folder .*cache is a file"):
        run_images(tiny_clip, folder, tmp_path / "out")


def namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(
    not namespace_available(),
    reason="needs `unshare -rm` (user and mount namespaces) to mount a private tmpfs",
)


def in_namespace(mount: str, script: str) -> subprocess.CompletedProcess:
    """Run `script` in Python in a private mount namespace after `mount` (a shell command):
    the mount disappears with the process, nothing is left on the machine."""
    code = textwrap.dedent(script)
    command = f'{mount} && exec {sys.executable} -c "$0"'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", command, code], capture_output=True, text=True, env=env
    )


@needs_namespace
@pytest.mark.parametrize(
    "options, message",
    [("size=2m", "MB free, less than the 64 MB a run needs"), ("ro", "Read-only file system")],
)
def test_full_or_read_only_output_folders_are_refused(
    options, message, tiny_clip, colour_photos, tmp_path
):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    mounted = tmp_path / "mnt"
    mounted.mkdir()
    outcome = in_namespace(
        f"mount -t tmpfs -o {options} tmpfs {mounted}",
        f"""
        from pathlib import Path
        from ducho_fast.api import RunOptions, SingleModelJob, extract_single
        from ducho_fast.core.errors import OutputError
        job = SingleModelJob({str(tiny_clip)!r}, Path({str(mounted / "out")!r}),
                             images=Path({str(folder)!r}))
        try:
            extract_single(job, RunOptions(progress=False))
        except OutputError as exc:
            print("OutputError:", exc)
        """,
    )
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.startswith("OutputError:") and message in outcome.stdout


# --- 5. no memory-mapped writes: a full disk is an error, not SIGBUS -----------------------


@needs_namespace
def test_a_full_disk_while_writing_features_is_an_error_not_sigbus(tmp_path):
    mounted = tmp_path / "mnt"
    mounted.mkdir()
    outcome = in_namespace(
        f"mount -t tmpfs -o size=1m tmpfs {mounted}",
        f"""
        import numpy as np
        from pathlib import Path
        from ducho_fast.core.errors import OutputError
        from ducho_fast.engine.sinks.compact import CompactSink
        shards = [np.ones((512, 512), np.float32)] * 4  # 4 MB onto a 1 MB file system
        try:
            CompactSink().finalize(Path({str(mounted / "out")!r}), [str(i) for i in range(2048)],
                                   lambda: iter(shards), {{}}, False)
        except OutputError as exc:
            print("OutputError:", exc)
        print(sorted(p.name for p in Path({str(mounted / "out")!r}).iterdir()))
        """,
    )
    assert outcome.returncode == 0, f"exit {outcome.returncode}: {outcome.stderr}"  # SIGBUS: -7
    first, listing = outcome.stdout.splitlines()
    assert "cannot write" in first and "features.npy" in first
    assert "No space left on device" in first and "free some space" in first
    assert listing == "[]"  # no partial features.npy, no temporary file left


def test_no_writer_maps_files_into_memory():
    """A write into a memory map on a full disk kills the process with SIGBUS; reads may map."""
    sources = (ROOT / "ducho_fast").rglob("*.py")
    offending = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "open_memmap" in line
        or "np.memmap" in line
        or "mmap.mmap" in line
        or any(f'mmap_mode="{mode}"' in line for mode in ("r+", "w+", "c"))
    ]
    assert offending == []


# --- 6. one run per output folder -----------------------------------------------------------


def test_a_second_run_on_the_same_output_is_refused_and_a_dead_holder_does_not_block(
    tiny_clip, colour_photos, tmp_path
):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    output = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from ducho_fast.core.locks import folder_lock\n"
            f"with folder_lock(Path({str(output)!r})):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        overwrite = RunOptions(progress=False, overwrite=True)
        with pytest.raises(OutputError, match=rf"another ducho-fast run \(pid {holder.pid}\)"):
            run_images(tiny_clip, folder, output, overwrite)
        assert not list(output.rglob("*.npy")) and not list(output.rglob("*.json"))  # no work
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    _, ids, _ = run_images(tiny_clip, folder, output)
    assert sorted(ids) == sorted(p.stem for p in colour_photos[:2])


# --- 7. staging folders of killed exports ---------------------------------------------------


def test_the_staging_folder_of_a_killed_export_is_removed_by_the_next_export(tiny_clip, tmp_path):
    from ducho_fast.exporter.api import ExportConfig, export
    from ducho_fast.models.spec import ModelRef

    artifacts = tmp_path / "artifacts"
    stuck = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                import ducho_fast.exporter.api as api
                from ducho_fast.models.spec import ModelRef

                def export_one(*args):
                    print("staging", flush=True)
                    time.sleep(600)

                api.export_one = export_one  # hold the export with its staging folder made
                ref = ModelRef({str(tiny_clip)!r}, task="image")
                api.export(api.ExportConfig(ref, Path({str(artifacts / "a")!r})))
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert stuck.stdout.readline().strip() == "staging"
    finally:
        stuck.send_signal(signal.SIGTERM)
        stuck.wait()
    left = [p for p in artifacts.iterdir() if ".staging-" in p.name]
    assert len(left) == 1  # SIGTERM skipped the export's own cleanup
    export(ExportConfig(ModelRef(str(tiny_clip), task="image"), artifacts / "b"))
    assert not left[0].exists()
    assert sorted(p.name for p in artifacts.iterdir()) == ["b"]


def test_the_staging_folder_of_a_live_export_is_kept(tmp_path):
    from ducho_fast.exporter.api import remove_dead_staging, staging_prefix

    live = tmp_path / f"{staging_prefix(tmp_path / 'x')}abc123"
    live.mkdir()
    remove_dead_staging(tmp_path)
    assert live.exists()


def test_export_cleanup_does_not_touch_other_folders(tmp_path):
    from ducho_fast.exporter.api import remove_dead_staging

    names = ("x", ".x.staging-abc", "x.staging-host-1-abc", ".x.staging-elsewhere-999999999-ab")
    kept = [tmp_path / name for name in names]
    for folder in kept:
        folder.mkdir()
    remove_dead_staging(tmp_path)
    assert all(folder.exists() for folder in kept)


# --- errors reach the CLI as one line ------------------------------------------------------


def test_cli_reports_an_unwritable_output_in_one_line(tiny_clip, colour_photos, tmp_path):
    folder = photo_folder(tmp_path, colour_photos[:2], {})
    (tmp_path / "taken").write_text("a file")
    outcome = cli(
        "--model", str(tiny_clip), "--output", str(tmp_path / "taken"), "--images", str(folder)
    )
    assert outcome.exit_code == 1 and outcome.output.count("\n") == 1
    assert "is a file, not a folder" in outcome.output


def test_extraction_error_is_raised_for_an_empty_folder_by_the_api(tiny_clip, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ExtractionError, match="has no items"):
        run_images(tiny_clip, tmp_path / "images", tmp_path / "out")


def test_forked_workers_do_not_hold_a_killed_runs_lock(tmp_path):
    """A decode worker forked by the run inherits the lock's descriptor; when the run is
    SIGKILLed, the worker must not keep the folder locked while it lingers."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from ducho_fast.core.locks import folder_lock\n"
        f"with folder_lock(Path({str(tmp_path / 'out')!r})):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60); os._exit(0)\n"  # a worker outliving its parent for a while
        "    print('held', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait()
        from ducho_fast.core.locks import folder_lock

        with folder_lock(tmp_path / "out"):  # the lingering child does not block it
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
