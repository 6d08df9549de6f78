"""Batches: one prompt over several images (or one image with several seeds), one job each; their
state read off the jobs, their event stream and their zip.

May import: gateway.jobs and everything below it. Never gateway.http or gateway.app.
"""
