"""An in-process Kubernetes cluster for trying and testing the operator without one.

Built on kmock (an HTTP mock of the Kubernetes API by kopf's author), with what a real
cluster has and kmock lacks added: server-side metadata, resourceVersions and watch
resume, label/field selectors, the status subresource, owner-reference garbage
collection, CRD schema validation, what kubectl needs, a Job controller and a fake
kubelet that runs each pod's command as a local subprocess.
"""
