"""submitit's module tree, served by jobsub: kept apart so that ``jobsub/`` shows jobsub's own layers.

Each module here is reached by submitit's path with the word changed, as code
written for submitit (and the ``submitit`` alias, ``jobsub install-submitit-alias``)
imports it: ``jobsub.core.utils``, ``jobsub.slurm.slurm``, ``jobsub.helpers``...  The
package ``jobsub`` maps those names to the modules here (one object under both
names: patching one patches the other; ``jobsub/__init__.py`` lists them).  jobsub's own
code imports them from here.

::

    core/ auto/ local/ slurm/   submitit's packages: its names for jobsub's objects
    aliases.py                  SlurmExecutor, LocalExecutor, DebugExecutor, *Job
    helpers.py                  Checkpointable, FunctionSequence, as_completed, RsyncSnapshot...
    watcher.py                  Job.watcher (InfoWatcher), over the shared pollers
    submitit_alias.py           the opt-in ``submitit`` package whose every module is jobsub's
"""
