# The distillation test on SmolLM2-135M at a 2-core scale (issue 32.6); see the results page.
from tvlens.compare.distill import run_distill

IN_DOMAIN = [
    "fv/country-capital",
    "fv/english-french",
    "fv/antonym",
    "fv/present-past",
    "fv/choose_first_of_3",
    "fv/sentiment",
]
res = run_distill(
    "smollm2-135m",
    out="runs/distill_cpu",
    preset="cpu",
    ranks=(1, 8),
    seeds=3,
    student_epochs=6,
    in_domain=IN_DOMAIN,
    epochs=6,
    # the learning rates the cpu_v3 comparison chose on dev for lora_r{1,8} and atv_r{1,8}
    peft={"lrs": [3e-3]},
    atv={"lrs": [5e-3], "scale": 1e-2},
)
print(res)
