"""Write a float16 copy of MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) for machines without its package.

    python scripts/minilm_fp16.py <data root>      # writes <data root>/models/all-MiniLM-L6-v2/

The float32 weights (87 MB) exceed what a GPU job may carry (64 MiB); the float16 copy is 44 MB. Source
``minilm`` (slimbench/models/text.py) falls back to this folder when the package is missing; config.json
says ``dtype: float32``, so transformers casts the weights back to float32 when it loads them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from slimbench.models.text import MINILM_FOLDER, resolve_source

COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def write_fp16_copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["dtype"] = "float32"
    config.pop("torch_dtype", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for name in COPIED:
        shutil.copy(source / name, target / name)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = write_fp16_copy(Path(resolve_source("minilm")), Path(sys.argv[1]) / "models" / MINILM_FOLDER)
    print(f"wrote {out}")
