"""Records the SHA-256 of each shipped `NAME.tflite` in its `NAME.manifest.json` (field `sha256`).

    python tflite_models/record_hashes.py [--check]

The runtime opens a model without first trying it in a child process only when its bytes hash to
its manifest's `sha256` (`tfdefakeq.runtime.loader`). `tfdefakeq.convert` records it when it writes
a model; this script adds it to manifests written before that field existed, inserted after
`size_bytes` with the rest of the manifest unchanged. `--check` only reports mismatches (exit 1).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for model in sorted(HERE.glob("*.tflite")):
        sidecar = model.with_name(model.stem + ".manifest.json")
        manifest = json.loads(sidecar.read_text(encoding="utf-8"))
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if manifest.get("sha256") == digest:
            print(f"{sidecar.name}: sha256 {digest} (up to date)")
            continue
        stale += 1
        if check:
            print(f"{sidecar.name}: sha256 {manifest.get('sha256')!r} is not the model's {digest}")
            continue
        updated = {}
        for key, value in manifest.items():
            if key != "sha256":
                updated[key] = value
            if key == "size_bytes":
                updated["sha256"] = digest
        updated.setdefault("sha256", digest)
        sidecar.write_text(json.dumps(updated, indent=2) + "\n", encoding="utf-8")
        print(f"{sidecar.name}: sha256 {digest} (recorded)")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
