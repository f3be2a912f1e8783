# Apply the last stage of a chain to the saved model of its prefix. Chains that share a prefix share its
# folder, so every distinct prefix is built once.


rule compress:
    input:
        arch=exp("{prefix}", "model", "arch.json"),
    output:
        arch=exp("{prefix}+{stage}", "model", "arch.json"),
        weights=exp("{prefix}+{stage}", "model", "model.safetensors"),
    log:
        exp("{prefix}+{stage}", "compress.log"),
    params:
        config=config_args,
        settings=settings("compress"),
        directory=lambda wc, output: os.path.dirname(os.path.dirname(output.arch)),
    conda:
        "../../envs/slimbench.yaml"
    threads: CFG["threads"]  # the torch threads the step sets: Snakemake and SLURM reserve as many cores
    resources:
        gpu=1,
    shell:
        "slimbench compress {params.config} {params.directory} > {log} 2>&1"
