"""Rebuild the built-in tokenizer shipped in src/omnipath_lvlm/resources/tokenizer/.

Usage: .venv/bin/python scripts/build_tokenizer.py
"""
from pathlib import Path

from omnipath_lvlm.tokenizer import corpus, train_builtin_tokenizer

out = Path(__file__).resolve().parents[1] / "src" / "omnipath_lvlm" / "resources" / "tokenizer"
out.mkdir(parents=True, exist_ok=True)
tok = train_builtin_tokenizer(corpus())
tok.backend_tokenizer.save(str(out / "tokenizer.json"))
print(f"wrote {out / 'tokenizer.json'} with {len(tok)} tokens")
