# Order of Compression (Shen et al., 2024, arXiv 2403.17447): the pairwise results decide the full chain.
#
# For each study drawing the `order_graph` figure and each (dataset, model) of its grid, the checkpoint
# `order_decide` reads the metrics of every pairwise chain (A+B and B+A, all seeds), builds the precedence
# graph and sorts it topologically (methods/order_graph.py). Only then does Snakemake know which full chains
# to run: the sorted order, its reverse and seeded random orders, every prefix evaluated. Their steps are the
# ordinary compress/evaluate rules on the same folders as the config's chains, so a prefix shared with a
# pairwise chain (base+distill+prune) or with another derived chain is built once. A cycle in the graph is written to order.json and no chain is derived.
#
#   snakemake --cores 2 order_chains --configfile config/default.yaml

checkpoint order_decide:
    input:
        order_pairwise_metrics,
    output:
        rep("derived", "{dataset}", "{model}", "order.json"),
    log:
        rep("derived", "{dataset}", "{model}", "order.log"),
    wildcard_constraints:
        study=ORDER_STUDY,
    params:
        config=CONFIG_JSON,
        random=ORDER_RANDOM,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench order-decide --config {params.config} --study {wildcards.study} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --random {params.random} --out {output} > {log} 2>&1"


rule order_derived:
    input:
        order_derived_metrics,
    output:
        rep("derived", "{dataset}", "{model}", "order_chains.csv"),
    log:
        rep("derived", "{dataset}", "{model}", "order_chains.log"),
    wildcard_constraints:
        study=ORDER_STUDY,
    params:
        config=CONFIG_JSON,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench order-summarize --config {params.config} --out {output} {input} > {log} 2>&1"


rule order_chains:
    input:
        [path for study in ORDER_STUDIES for path in order_summaries(study)],
