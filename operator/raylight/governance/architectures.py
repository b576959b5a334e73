"""Which architecture a base model has, and what LoRA may adapt in it.

The architecture is a transformers `model_type` (`llama`, `gpt2`, `falcon`, ...). It is read from the base's
`config.json` where the weights are at hand (a package:// model or a file:// folder), else recognised from the
model's name by `NAME_HINTS` (a table of well-known model families), else unknown. What LoRA may adapt comes
from PEFT itself (`architectures_table.py`, generated from `peft.utils.constants` and transformers by
`scripts/gen_architectures.py` and checked against them by a test): PEFT's default target modules per
architecture and the names of each architecture's layers. Pure lookups except `model_type_of`, which reads
one small JSON file. No PEFT or transformers import here: `raylight validate` stays light.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raylight.api.sources import at_hand
from raylight.governance.architectures_table import MODULE_NAMES, PEFT_DEFAULT_TARGET_MODULES

ALL_LINEAR: Final = "all-linear"  # PEFT's own shorthand: every linear layer but the output head

# Well-known model families by name (the repository, package or file name, lower case), first match wins.
# Used only where no config.json is at hand (hf://, s3://, pvc:// sources at validation, GGUF packages).
NAME_HINTS: Final[tuple[tuple[str, str], ...]] = (
    (r"falcon-?3|falcon-mamba|falcon-h1", ""),  # Falcon 3 is Llama-shaped, Mamba/H1 are not Falcon: no guess
    (r"smollm|tinyllama|llama|vicuna|codellama|deepseek-r1-distill-llama", "llama"),
    (r"qwen3.*(moe|-a\d+b)", "qwen3_moe"),
    (r"qwen3", "qwen3"),
    (r"qwen2.*(moe|-a\d+b)|qwen1\.5-moe", "qwen2_moe"),
    (r"qwen2|qwen1\.5|deepseek-r1-distill-qwen", "qwen2"),
    (r"mixtral", "mixtral"),
    (r"mistral", "mistral"),
    (r"gemma-?3", "gemma3_text"),
    (r"gemma-?2", "gemma2"),
    (r"gemma", "gemma"),
    (r"phi-?[34]", "phi3"),
    (r"phi-?(1|1[._]5|2)\b", "phi"),
    (r"falcon", "falcon"),
    (r"\bmpt-", "mpt"),
    (r"starcoder2", "starcoder2"),
    (r"gpt-?neox|pythia", "gpt_neox"),
    (r"gpt-?j\b", "gptj"),
    (r"gpt-?neo\b", "gpt_neo"),
    (r"distilgpt2|\bgpt2", "gpt2"),
    (r"bloom", "bloom"),
    (r"\bopt-\d", "opt"),
    (r"stablelm", "stablelm"),
    (r"olmo-?2", "olmo2"),
    (r"olmo", "olmo"),
    (r"granite", "granite"),
)


@dataclass(frozen=True)
class Architecture:
    """A base's architecture and how it was found (`config.json at PATH`, `its name`); model_type None:
    unknown."""

    model_type: str | None
    how: str

    @property
    def modules(self) -> tuple[str, ...] | None:
        """The names targetModules may use, where the table knows the architecture."""
        return MODULE_NAMES.get(self.model_type or "")

    @property
    def peft_default(self) -> tuple[str, ...] | str | None:
        """PEFT's default target modules for this architecture (None: PEFT has none)."""
        return PEFT_DEFAULT_TARGET_MODULES.get(self.model_type or "")


def hint(name: str) -> str | None:
    """The model_type a model's name suggests (NAME_HINTS), or None."""
    lowered = name.lower()
    for pattern, model_type in NAME_HINTS:
        if re.search(pattern, lowered):
            return model_type or None
    return None


def config_model_type(folder: Path) -> str | None:
    """`model_type` of a checkpoint folder's config.json, None when there is none (or it is unreadable)."""
    config = folder / "config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def model_type_of(source: str, file: str | None = None) -> Architecture:
    """The architecture of the model at `source` (a ModelSource URI) and `file` inside it."""
    where = at_hand(source)
    if where is not None:
        folder = (where / file).parent if file else where
        found = config_model_type(folder) if folder.is_dir() else None
        if found:
            return Architecture(found, f"config.json at {folder}")
    name = f"{source.partition('://')[2]} {file or ''}"
    guessed = hint(name)
    return Architecture(guessed, "its name") if guessed else Architecture(None, "unknown")


def _listing(names: tuple[str, ...]) -> str:
    return ", ".join(n for n in names if n not in ("lm_head", "wte", "wpe", "embed_tokens", "word_embeddings"))


def check_target_modules(arch: Architecture, targets: list[str] | None, subject: str) -> str | None:
    """Why LoRA with `targets` (None: PEFT's default) cannot adapt a base of this architecture, or None.

    Unknown architectures pass here (training checks the loaded model before its first step); known ones need
    every target to name one of its layers (a dotted name by its last part, as PEFT matches suffixes), and
    PEFT must have a default for them when no targets are given."""
    mt = arch.model_type
    if mt is None:
        return None
    if targets is None:
        if arch.peft_default is None:
            known = f" (its layers: {_listing(arch.modules)})" if arch.modules else ""
            return (f"{subject} is a {mt} model ({arch.how}) and PEFT has no default LoRA target modules for "
                    f"{mt}: set spec.hyperparameters.targetModules{known}")
        return None
    if targets == [ALL_LINEAR] or arch.modules is None:
        return None
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in arch.modules]
    if not missing:
        return None
    default = arch.peft_default
    suggestion = f"; PEFT's default for {mt} is {', '.join(default) if isinstance(default, tuple) else default}" \
        if default else ""
    return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not a layer of {subject}, a {mt} model "
            f"({arch.how}); its layers: {_listing(arch.modules)}{suggestion} (or leave targetModules unset)")
