# Chains decided at run time (slimbench/derive.py): for a study with `derive:` (e.g. the order study, Shen et al.
# 2024), the checkpoint reads the runs of the chains its deriver names (the pairwise orders) for one (dataset,
# model) and writes the decision: the chains to run next (the sorted order, its reverse, random orders). Only then
# does Snakemake know them; their steps are the ordinary compress/evaluate rules, so a prefix shared with a
# configured chain is built once. A cycle in the order graph is written to the decision and derives no chain.
#
#   snakemake --cores 2 order --configfile config/default.yaml


checkpoint derive:
    input:
        derive_inputs,
    output:
        rep("derived", "{dataset}", "{model}", "decision.json"),
    log:
        rep("derived", "{dataset}", "{model}", "decision.log"),
    wildcard_constraints:
        study=DERIVE_STUDIES,
    params:
        config=config_args,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench derive {params.config} --study {wildcards.study} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --out {output} > {log} 2>&1"
