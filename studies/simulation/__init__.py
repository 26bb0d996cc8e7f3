"""Simulated crowds: observers (models of a person, not people) and the driver that runs them.

``observers`` holds the answer rules; ``crowd`` drives the real HTTP JSON API with many
simulated participants at once; ``toy`` builds a tiny hand-made study for tests of the machinery.
"""
