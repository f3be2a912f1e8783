# Task metric, cost metrics and provenance of one experiment. Compressed chains also read the base model's
# metrics, to report the share of parameters/FLOPs kept.


rule evaluate:
    input:
        arch=exp("{chain}", "model", "arch.json"),
        base=base_metrics,
    output:
        exp("{chain}", "metrics.json"),
    log:
        exp("{chain}", "evaluate.log"),
    params:
        config=config_args,
        settings=settings("evaluate"),
        directory=lambda wc, output: os.path.dirname(output[0]),
    conda:
        "../../envs/slimbench.yaml"
    threads: lambda wc: max(CFG["threads"], evaluation_settings(CFG, wc.study)["latency"]["threads"])  # latency on own cores
    resources:
        gpu=1,  # and its own GPU
    shell:
        "slimbench evaluate {params.config} {params.directory} > {log} 2>&1"
