"""llamarig's deploy: `pyinfra INVENTORY deploy.py`.

Data flows one way: host data -> validation (every host, before anything runs)
-> resolved refs and models -> flags -> units -> operations.
"""

from tasks import build, models, power, services, summary, verify
from tasks.preflight import rig_plan

summary.register()  # at exit: which rigs deployed, which failed and why (unreachable ones too)
rig = rig_plan()
power.apply(rig)
built = build.apply(rig)
fetched = models.apply(rig)
units = services.apply(rig, built, model_ops=fetched)
verify.apply(rig, units)
models.prune(rig)  # only once every service answered: until then the old revision is the rollback
