"""The cloud kit: what every scheduler backend shares, written once.

``gateway``: one SDK door per provider (client, paced and retried calls, error mapping),
shared by storage and backends; ``aws``: the boto3 one (S3 folders and AWS Batch).
``arrays``: the states of many jobs at O(arrays) cost (``ArrayTracker``, composed over a
backend's ``Scheduler``), and the two rules every scheduler needs (``ForgottenJobs``: the
folder decides; ``PendingTooLong``: cancelled with the scheduler's reason).  ``container``:
the container keys, the code package and the task's command; ``attached``: the attached debug
run (``debug=True``); ``logs``: the log policy.  Backends compose these pieces; none is a base class that forces one shape on them.
"""
