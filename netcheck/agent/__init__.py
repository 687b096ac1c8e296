"""The agent side of fleet collection: enrollment, the spool, uploads and the unattended loop.

    config.py      agent.toml + the 0600 token file (the OS keychain is not used yet)
    enrollment.py  hashed hardware id, enrollment and re-enrollment
    spool.py       durable, bounded, checksummed queue of reports; counters; locks
    transport.py   one classified HTTP exchange with the collector (TLS, timeouts)
    uploader.py    drains the spool: ack-before-delete, quarantine, 401 debounce
    schedule.py    check schedule and upload backoff (pure)
    loop.py        `netcheck agent`: check lane and network lane
    upload.py      `netcheck check --upload`: spool_and_upload()
    cli.py         click commands `enroll` and `agent`

Nothing here imports the collector; the contract is the HTTP API (v1) and the
report schema (netcheck/schema/report-v1.schema.json).
"""
