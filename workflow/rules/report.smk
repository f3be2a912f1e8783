# Per study: tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) under reports/<config>/<study>/, plus one
# target rule per study, named after it (snakemake <study>).


rule aggregate:
    input:
        lambda wc: metrics_files(wc.study) + order_summaries(wc.study),
    output:
        csv=report(rep("table.csv"), caption="../report/table.rst", category="{study}",
                   labels={"study": "{study}", "type": "table"}),
        md=rep("table.md"),
        tex=rep("table.tex"),
    log:
        os.path.join(RESULTS, "{study}", "aggregate.log"),
    params:
        config=CONFIG_JSON,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench aggregate --config {params.config} --study {wildcards.study} > {log} 2>&1"


rule figure:
    input:
        lambda wc: metrics_files(wc.study) + order_summaries(wc.study),
    output:
        png=report(rep("{figure}.png"), caption="../report/figure.rst", category="{study}",
                   labels={"study": "{study}", "figure": "{figure}"}),
        pdf=rep("{figure}.pdf"),
    log:
        os.path.join(RESULTS, "{study}", "{figure}.log"),
    params:
        config=CONFIG_JSON,
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench figures --config {params.config} --study {wildcards.study} --only {wildcards.figure} > {log} 2>&1"


for _study in CFG["studies"]:

    rule:
        name:
            _study
        input:
            study_targets([_study]),
