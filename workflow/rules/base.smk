# Train or fine-tune the uncompressed model of one (study, dataset, model, seed).


rule base:
    output:
        arch=exp("base", "model", "arch.json"),
        weights=exp("base", "model", "model.safetensors"),
    log:
        exp("base", "base.log"),
    params:
        config=config_args,
        settings=settings("base"),
        directory=lambda wc, output: os.path.dirname(os.path.dirname(output.arch)),
    conda:
        "../../envs/slimbench.yaml"
    threads: CFG["threads"]  # the torch threads the step sets: Snakemake and SLURM reserve as many cores
    resources:
        gpu=1,
    shell:
        "slimbench base {params.config} {params.directory} > {log} 2>&1"
