# Apply the last stage of a chain to the saved model of its prefix. Chains that share a prefix share its
# folder, so every distinct prefix is built once.


rule compress:
    input:
        arch=EXP + "/{prefix}/model/arch.json",
    output:
        arch=EXP + "/{prefix}+{stage}/model/arch.json",
        weights=EXP + "/{prefix}+{stage}/model/model.safetensors",
    log:
        EXP + "/{prefix}+{stage}/compress.log",
    params:
        directory=lambda wc, output: os.path.dirname(os.path.dirname(output.arch)),
    conda:
        "../../envs/slimbench.yaml"
    resources:
        gpu=1,
    shell:
        "slimbench compress --config {CONFIG_JSON} {params.directory} > {log} 2>&1"
