# Task metric, cost metrics and provenance of one experiment. Compressed chains also read the base model's
# metrics, to report the share of parameters/FLOPs kept.


def base_metrics(wildcards):
    if wildcards.chain == "base":
        return []
    return EXP.format(**wildcards) + "/base/metrics.json"


rule evaluate:
    input:
        arch=EXP + "/{chain}/model/arch.json",
        base=base_metrics,
    output:
        EXP + "/{chain}/metrics.json",
    log:
        EXP + "/{chain}/evaluate.log",
    params:
        directory=lambda wc, output: os.path.dirname(output[0]),
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench evaluate --config {CONFIG_JSON} {params.directory} > {log} 2>&1"
