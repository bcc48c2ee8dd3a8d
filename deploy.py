"""llamarig's deploy: `pyinfra INVENTORY deploy.py`.

Data flows one way: host data -> validation and resolution of every host, before
anything runs (tasks/preflight.py: llamarig.release.resolve, then the release of
llamarig.release.assemble) -> operations, which only install what the release says.
"""

from tasks import build, models, power, report, rpc, services, summary, verify
from tasks.preflight import current

summary.register()  # at exit: which rigs deployed, which failed and why (unreachable ones too), and the report
deployment = current()
report.remember(deployment)  # for the closing report of what every rig serves
power.apply(deployment)
built = build.apply(deployment)
fetched = models.apply(deployment)
rpc.apply(deployment, built)  # worker rigs' rpc-servers, up and listening before any service that uses them changes
units, restarted = services.apply(deployment, built, model_ops=fetched)
verify.apply(deployment, units, restarted)
models.prune(deployment)  # only once every service answered: until then the old revision is the rollback
if deployment.doc["gpus"]:
    report.gpu_usage(name="GPU memory in use (for the report)")
