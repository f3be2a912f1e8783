# Per study: tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) under reports/<config>/<study>/, plus one
# target rule per study, named after it (snakemake <study>).


rule aggregate:
    input:
        lambda wc: metrics_files(wc.study),
    output:
        csv=report(REPORTS + "/{study}/table.csv", caption="../report/table.rst", category="{study}",
                   labels={"study": "{study}", "type": "table"}),
        md=REPORTS + "/{study}/table.md",
        tex=REPORTS + "/{study}/table.tex",
    log:
        REPORTS + "/{study}/aggregate.log",
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench aggregate --config {CONFIG_JSON} --study {wildcards.study} > {log} 2>&1"


rule figure:
    input:
        lambda wc: metrics_files(wc.study),
    output:
        png=report(REPORTS + "/{study}/{figure}.png", caption="../report/figure.rst", category="{study}",
                   labels={"study": "{study}", "figure": "{figure}"}),
        pdf=REPORTS + "/{study}/{figure}.pdf",
    log:
        REPORTS + "/{study}/{figure}.log",
    conda:
        "../../envs/slimbench.yaml"
    shell:
        "slimbench figures --config {CONFIG_JSON} --study {wildcards.study} --only {wildcards.figure} > {log} 2>&1"


for _study in CFG["studies"]:

    rule:
        name:
            _study
        input:
            study_targets([_study]),
