"""Read back a W&B offline run (its ``run-*.wandb`` file) to check what a user would see after ``wandb sync``.

The file is a W&B header followed by a LevelDB-style log of 32 KiB blocks whose records carry
serialized ``wandb_internal_pb2.Record`` messages (run, config, history, summary, ...).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte)
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run: pb.RunRecord | None = None
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exited: bool = False


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        block_left = BLOCK - (pos % BLOCK)
        if block_left < 7:  # block trailer padding
            pos += block_left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += BLOCK - (pos % BLOCK) if pos % BLOCK else 0
            continue
        if kind == FULL:
            pending = chunk
        elif kind in (FIRST, MIDDLE):
            pending = (pending if kind == MIDDLE else b"") + chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def read_run(run_dir: Path) -> OfflineRun:
    (log,) = run_dir.glob("run-*.wandb")
    out = OfflineRun(run_dir)
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            for item in record.run.config.update:
                out.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                out.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            out.history.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                                for item in record.history.item})
        elif kind == "exit":
            out.exited = True
        elif kind == "summary":
            for item in record.summary.update:
                out.summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def read_runs(wandb_root: Path, wait_s: float = 30.0) -> list[OfflineRun]:
    """Every offline run under ``wandb_root``, once each has its exit record (W&B's service may still be
    flushing the last records just after ``finish()`` returned)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        runs = [read_run(d) for d in sorted(Path(wandb_root).glob("wandb/offline-run-*"))]
        if all(r.exited for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)
