#!/usr/bin/env bash
# `make tools`: builds the real Kubernetes components (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl), Helm, etcd, toxiproxy and Kueue from the Go
# modules pinned in tools/go.mod, tools/etcd/go.mod, tools/toxiproxy/go.mod and tools/kueue/go.mod, into a
# per-user cache folder keyed by
# their versions (kubenas.localcluster.binaries reads the same key). A stamp makes a
# second run do nothing; Go's module and build caches carry over between runs.
# As envtest does, a $KUBEBUILDER_ASSETS folder that already holds them builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)

version() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
k8s=$(version "$here" k8s.io/kubernetes)
helm=$(version "$here" helm.sh/helm/v3)
etcd=$(version "$here/etcd" go.etcd.io/etcd/server/v3)
client_go=$(version "$here" k8s.io/client-go)
cache=${KUBENAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenas/tools}
dir="$cache/k8s-${k8s}_etcd-${etcd}_helm-${helm}"
stamp="$dir/.built"

# toxiproxy (the chaos suite's fault proxy), from tools/toxiproxy/go.mod: its own stamp,
# so a new pin builds it alone (seconds), not Kubernetes again.
toxiproxy=$(version "$here/toxiproxy" github.com/Shopify/toxiproxy/v2)
if [ ! -f "$dir/.toxiproxy-$toxiproxy" ]; then
    mkdir -p "$dir/bin"
    echo "tools: building toxiproxy $toxiproxy into $dir/bin"
    (cd "$here/toxiproxy" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/bin/toxiproxy-server" \
        github.com/Shopify/toxiproxy/v2/cmd/server)
    touch "$dir/.toxiproxy-$toxiproxy"
fi

# Kueue's controller manager (the Kueue admission tests), from tools/kueue/go.mod: its own
# stamp too. Its CRDs and webhook manifests come from the same module zip, copied beside
# the binary (kueue-config/), where kubenas.localcluster.kueue reads them.
kueue=$(version "$here/kueue" sigs.k8s.io/kueue)
if [ ! -f "$dir/.kueue-$kueue" ]; then
    rm -rf "$dir/kueue-config"  # no CRD of an earlier Kueue stays behind
    mkdir -p "$dir/bin" "$dir/kueue-config/crds"
    echo "tools: building Kueue $kueue into $dir/bin (cold: about 6 min on 2 cores)"
    (cd "$here/kueue" && CGO_ENABLED=0 nice go build -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue -X sigs.k8s.io/kueue/pkg/version.GitCommit=" \
        -o "$dir/bin/kueue" sigs.k8s.io/kueue/cmd/kueue)
    module=$(cd "$here/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
    cp "$module"/config/components/crd/bases/*.yaml "$dir/kueue-config/crds/"
    cp "$module/config/components/webhook/manifests.yaml" "$dir/kueue-config/webhooks.yaml"
    chmod -R u+w "$dir/kueue-config"
    touch "$dir/.kueue-$kueue"
fi

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    ok=1
    for c in "${components[@]}"; do [ -x "$KUBEBUILDER_ASSETS/$c" ] || ok=0; done
    if [ "$ok" = 1 ]; then echo "tools: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"; exit 0; fi
fi
if [ -f "$stamp" ]; then
    echo "tools: up to date in $dir/bin"
    exit 0
fi
mkdir -p "$dir/bin"
start=$(date +%s)
export CGO_ENABLED=0

# Version ldflags, so that /version, `kubectl version` and `helm version` tell the truth.
major=${k8s#v}; major=${major%%.*}
minor=${k8s#v*.}; minor=${minor%%.*}
kv=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kv+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    kv+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# Helm's own version, and the Kubernetes version its lint and `template` assume (as
# Helm's Makefile sets them from client-go: v0.N.M is Kubernetes 1.N).
cg_minor=${client_go#v0.}; cg_minor=${cg_minor%%.*}
hv="-X helm.sh/helm/v3/internal/version.version=$helm -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hv+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$cg_minor"
done

echo "tools: building Kubernetes $k8s, Helm $helm and etcd $etcd into $dir/bin (cold, modules downloaded: about 6.5 min on 2 cores)"
(cd "$here" && go build -trimpath -tags selinux,notest -ldflags "-s -w $kv" -o "$dir/bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$here" && go build -trimpath -ldflags "-s -w $hv" -o "$dir/bin/helm" helm.sh/helm/v3/cmd/helm)
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" go.etcd.io/etcd/server/v3)
touch "$stamp"
echo "tools: built in $(( $(date +%s) - start )) s"
