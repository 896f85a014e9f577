"""What the gate calls a program with: four calls of random prompts and image seeds, drawn per gate run
(see the package docstring for what each call catches)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Prompts the gate draws its inputs from when the run gives it too few of its own (``gate_prompts``): varied
# subjects, styles and lengths.
PROMPT_POOL = (
    "a photograph of an astronaut riding a horse",
    "a bowl of fruit on a kitchen table",
    "a red cube on top of a blue sphere",
    "portrait of an old fisherman, oil painting",
    "a city skyline at night with neon lights reflected in the rain",
    "a watercolor painting of a fox in a snowy forest",
    "two cats sleeping on a sofa",
    "a cozy cabin in the mountains at sunset",
    "an isometric illustration of a tiny island with a lighthouse",
    "a close-up photo of a dew drop on a green leaf",
    "a steam train crossing a stone bridge",
    "a bustling market street in the morning, cinematic lighting",
    "a child drawing of a happy sun and a house",
    "a futuristic car parked in front of a glass building",
    "a plate of spaghetti with tomato sauce and basil",
    "an elephant walking across the desert",
    "a sailboat on a calm lake, long exposure",
    "a medieval knight in shining armor, digital art",
    "a cup of coffee next to an open book",
    "a colorful hot air balloon over green fields",
    "black and white photo of a jazz musician playing the saxophone",
    "a robot watering plants in a greenhouse",
    "a bird perched on a branch in spring",
    "an abstract painting of blue and orange shapes",
    "a snowy street with old houses at dusk",
    "a dog wearing sunglasses on a beach",
    "the interior of a library with tall wooden shelves",
    "a bicycle leaning against a yellow wall",
    "a mountain lake surrounded by pine trees, high resolution",
    "a pixel art castle",
    "a bowl of ramen, studio lighting",
    "a tiger resting in tall grass",
    "a sketch of a woman reading by the window",
    "a small boat in a storm at sea",
    "a field of sunflowers under a cloudy sky",
    "a vintage poster of a rocket launch",
)


@dataclass(frozen=True)
class Call:
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    traced: bool = True
    reference: int | None = None  # the GT call whose trace this call's must match
    compare_gt: bool = False  # whether the images are compared with the GT's for the same call
    repeats: int | None = None  # the earlier call with the same inputs (bit-identical pixels expected)


PROMPTS_PER_GATE = 3


def gate_prompts(run_prompts) -> tuple[str, ...]:
    """The prompts a gate draws from: the run's own (the operator's, which no program can import) where they hold
    at least three different ones, else :data:`PROMPT_POOL`."""
    distinct = tuple(dict.fromkeys(run_prompts or ()))
    return distinct if len(distinct) >= PROMPTS_PER_GATE else PROMPT_POOL


def draw_inputs(seed: int, prompts=PROMPT_POOL) -> list[Call]:
    """The four calls of one gate run (see the module docstring), drawn from ``seed`` and ``prompts`` (at least
    three different ones)."""
    rng = random.Random(f"accelbench-gate:{seed}")
    p = rng.sample(list(prompts), PROMPTS_PER_GATE)
    s = [rng.getrandbits(63) for _ in range(3)]
    first, second = ((p[0], p[1]), (s[0], s[1])), ((p[2], p[1], p[0]), (s[2], s[1], s[0]))
    return [Call(*first, reference=0, compare_gt=True),
            Call(*second, reference=1, compare_gt=True),
            Call(*first, reference=0, repeats=0),
            Call(*second, traced=False, repeats=1)]


REFERENCE_CALLS = (0, 1)  # the calls the GT and baseline programs run
# Positions of call 1's images inside call 2: (index in call 1, index in call 2).
PERMUTED = ((0, 2), (1, 1))
