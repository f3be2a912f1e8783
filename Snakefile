# slimbench: every method x model x dataset x seed x chain, one metrics file each, then tables and figures.
#
#   snakemake --cores 2 --configfile config/smoke.yaml          everything in a config, checked against reports/smoke
#   snakemake --cores 2 --configfile config/smoke.yaml -n       the plan (dry run)
#   snakemake --cores 2 skeleton --configfile config/smoke.yaml       one study's tables and figures
#   snakemake --cores 2 results/smoke/skeleton/.../seed0/base+int8/metrics.json --configfile config/smoke.yaml
#                                                                     one experiment (targets before --configfile,
#                                                                     which takes several files)
#
# Without --configfile, config/default.yaml is used. See README.md.

from snakemake.utils import min_version

min_version("8.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/derive.smk"


rule all:
    default_target: True
    input:
        [path for study in CFG["studies"] for path in study_outputs(study)],
        os.path.join(REPORTS, "SCORECARD.md"),
        [os.path.join(REPORTS, "compare.md")] if REFERENCE and os.path.isdir(REFERENCE) else [],
