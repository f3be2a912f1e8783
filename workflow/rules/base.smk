# Train or fine-tune the uncompressed model of one (study, dataset, model, seed).


rule base:
    output:
        arch=EXP + "/base/model/arch.json",
        weights=EXP + "/base/model/model.safetensors",
    log:
        EXP + "/base/base.log",
    params:
        directory=lambda wc, output: os.path.dirname(os.path.dirname(output.arch)),
    conda:
        "../../envs/slimbench.yaml"
    resources:
        gpu=1,
    shell:
        "slimbench base --config {CONFIG_JSON} {params.directory} > {log} 2>&1"
