"""Training recipes as read from config: the settings a fine-tuning run applies, with its defaults.

Torch-free, so the tables stage reports exactly the values training used without importing training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxrmim.config import merge
from cxrmim.inits import parse_init

LR_REFERENCE_BATCH = 256  # peak lr = base_lr * batch / 256, the linear scaling rule of MAE/BEiT fine-tuning
DEFAULT_BETAS = (0.9, 0.999)  # AdamW betas of MAE fine-tuning: fixed, the config's finetune section has no betas
DEFAULT_RECIPE = "default"  # the `finetune:` section itself, for every init no recipe names

# Keys of a training section that say where or how fast a job runs, never what it learns: no run signature, no
# Table 1 row (the DAG's own choices, e.g. pretrain.methods, are added where they apply).
JOB_KEYS = frozenset(
    {"device", "cpu_fallback", "compile", "num_workers", "resources", "data_placement", "grad_checkpointing"}
)


@dataclass(frozen=True)
class FinetuneSettings:
    """The `finetune:` config section, as far as one training run needs it."""

    epochs: int
    batch_size: int
    base_lr: float
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    warmup_epochs: float = 0.0
    min_steps: int = 0
    crop_scale: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    device: str = "auto"
    cpu_fallback: bool = False  # a GPU job with no usable GPU may train on the CPU
    seed_offset: int = 0
    mode: str = "full"  # full network, or `probe`: the head only, on frozen features
    augment: str = "current"  # preset: none | current (crop_scale/hflip below) | classic | randaugment | native
    effective_batch_size: int | None = None  # batch per optimiser step (accumulated micro-batches); None = batch_size
    data_placement: str = "auto"  # auto | device | host (cxrmim.data.placement)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, same weights

    @property
    def accumulation(self) -> int:
        """Micro-batches of `batch_size` per optimiser step."""
        effective = self.effective_batch_size or self.batch_size
        if effective % self.batch_size:
            raise ValueError(
                f"finetune.effective_batch_size {effective} is not a multiple of batch_size {self.batch_size}"
            )
        return effective // self.batch_size

    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"  # cosine (warmup then half-cosine) | step (warmup then lr x gamma at each milestone)
    lr_milestones: tuple[float, ...] = ()  # step schedule: fractions of the training steps
    lr_gamma: float = 0.1
    clip_grad: float | None = None  # max gradient norm; None: no clipping
    current_preset: str = "current"  # what the `current` preset applies (a recipe may make it e.g. randaugment)
    recipe: str = DEFAULT_RECIPE

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> FinetuneSettings:
        """Pick the known keys; keys used only by the workflow (inits, resources, ...) are ignored."""
        augment = section.get("augment") or {}
        steps = section.get("lr_steps") or {}
        clip = section.get("clip_grad")
        return cls(
            epochs=int(section["epochs"]),
            batch_size=int(section["batch_size"]),
            base_lr=float(section["base_lr"]),
            weight_decay=float(section.get("weight_decay", 0.05)),
            layer_decay=float(section.get("layer_decay", 0.75)),
            drop_path=float(section.get("drop_path", 0.1)),
            warmup_epochs=float(section.get("warmup_epochs", 0.0)),
            min_steps=int(section.get("min_steps", 0)),
            crop_scale=tuple(augment.get("crop_scale", (1.0, 1.0))),
            hflip=bool(augment.get("hflip", False)),
            device=str(section.get("device", "auto")),
            cpu_fallback=bool(section.get("cpu_fallback", False)),
            seed_offset=int(section.get("seed", 0)),
            mode=str(section.get("mode", "full")),
            augment=str(section.get("augment_preset", "current")),
            effective_batch_size=int(section["effective_batch_size"]) if section.get("effective_batch_size") else None,
            data_placement=str(section.get("data_placement", "auto")),
            grad_checkpointing=bool(section.get("grad_checkpointing", False)),
            optimizer=str(section.get("optimizer", "adamw")),
            momentum=float(section.get("momentum", 0.9)),
            schedule=str(section.get("schedule", "cosine")),
            lr_milestones=tuple(float(m) for m in steps.get("milestones", ())),
            lr_gamma=float(steps.get("gamma", 0.1)),
            clip_grad=None if clip is None else float(clip),
            current_preset=str(section.get("current_preset", "current")),
            recipe=str(section.get("recipe", DEFAULT_RECIPE)),
        )


def init_entry(init_name: str) -> str:
    """The finetune.inits entry a concrete init comes from: its method for a pretraining run, else itself."""
    spec = parse_init(init_name)
    return spec.kind if spec.pretrained else spec.name


def recipe_of(finetune_cfg: dict[str, Any], init_name: str) -> str | None:
    """The `finetune.recipes` entry that lists this init (by entry, e.g. mae, or by concrete name); None if none."""
    names = {init_name, init_entry(init_name)}
    found = [name for name, recipe in (finetune_cfg.get("recipes") or {}).items() if names & set(recipe["inits"])]
    if len(found) > 1:
        raise ValueError(f"init {init_name} is listed by several finetune.recipes ({found}); list it in one")
    return found[0] if found else None


def init_settings(finetune_cfg: dict[str, Any], init_name: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `finetune:` section one init trains with: its recipe merged over the section (recursively), plus the
    recipe's name; the section itself (without `recipes` and `drop`) for an init no recipe lists."""
    base = {k: v for k, v in finetune_cfg.items() if k not in (*drop, "recipes")}
    name = recipe_of(finetune_cfg, init_name)
    if name is None:
        return base
    own = {k: v for k, v in finetune_cfg["recipes"][name].items() if k != "inits"}
    return merge(base, own) | {"recipe": name}


def check_recipes(finetune_cfg: dict[str, Any]) -> None:
    """Every recipe lists only configured inits, and no init is in two recipes."""
    entries = set(finetune_cfg["inits"])
    seen: dict[str, str] = {}
    for name, recipe in (finetune_cfg.get("recipes") or {}).items():
        if name == DEFAULT_RECIPE:
            raise ValueError(f"finetune.recipes.{DEFAULT_RECIPE}: the name is reserved for the finetune section itself")
        for init in recipe["inits"]:
            if init not in entries:
                raise ValueError(
                    f"finetune.recipes.{name}.inits has {init!r}, which is not in finetune.inits "
                    f"({sorted(entries)}); list the finetune.inits entry"
                )
            if init in seen:
                raise ValueError(
                    f"{init} is in finetune.recipes.{seen[init]} and finetune.recipes.{name}; give each init one recipe"
                )
            seen[init] = name
