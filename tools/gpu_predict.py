"""Record the Triton kernel's compile reports and the GPU time predictions derived from them.

    .venv/bin/python tools/gpu_predict.py compile       # notebooks/data/gpu/compiled.json (a few minutes)
    .venv/bin/python tools/gpu_predict.py predict       # notebooks/data/gpu/predictions.json from compiled.json

``predict`` refuses to overwrite predictions.json once a measured GPU result exists
(convbook.gpu_compile.write_predictions): predictions are recorded before measurement and
never edited after it.
"""

from __future__ import annotations

import argparse
import sys

from convbook import gpu_compile as gc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("compile", "predict"))
    args = ap.parse_args(argv)
    if args.what == "compile":
        records = gc.compiled_records()
        path = gc.write_compiled(records)
        print(f"wrote {path} ({len(records)} compile reports)")
    else:
        compiled = gc.load_json("compiled.json")
        try:
            path = gc.write_predictions(gc.predictions(compiled["records"]), compiled_path="compiled.json")
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
