"""The DICOM node: studies in by C-STORE, scored once complete, their SRs sent by C-STORE (python -m pacs.node).

spool.py (durable, one folder per study), completion.py (a study is complete after --stable-seconds of
silence), scoring.py (one study's instances to SRs), scp.py (the pynetdicom AE that receives),
sender.py (C-STORE to the destination, retry with back-off), service.py (ties them), cli.py.
"""
