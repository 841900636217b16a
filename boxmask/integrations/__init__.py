"""Labeling-tool integrations (Label Studio, CVAT): thin translators between a tool's JSON and
`boxmask.runtime`, with no model logic and no HTTP server of their own (docs/architecture.md).
"""
