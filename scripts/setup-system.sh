#!/usr/bin/env bash
# Install the system packages the tests need (Debian bookworm), as root. Idempotent: when every
# package is installed already it touches nothing and needs no network.
#
# What each is for:
#   docker-registry  a real OCI registry on loopback (CNCF distribution 2.8)
#   apache2-utils    htpasswd, for the registry's basic-auth mode
#   skopeo, umoci    copying and assembling images (OCI layouts, docker-archives)
#   podman, runc, uidmap, fuse-overlayfs
#                    a real engine speaking the Docker API (runc: crun fails on mixed cgroups)
#   mmdebstrap       the Debian base image fixture, built from Debian's packages
#   gcc              ELF libraries compiled for the linkage tests
#   musl-tools       musl-gcc, for the musl loader's linkage tests (musl itself comes as a .deb layer)
#   zstd             zstd-compressed layers
#   make             the test entry point (make test)
#   rpm              rpmbuild and rpm --justdb write the real rpmdb.sqlite of the inventory tests
#   dpkg-dev         dpkg-scanpackages, the Packages index of the lock tests' flat apt repository
#   slurm-wlm        slurmctld, slurmd, sbatch...: a real one-node Slurm cluster (campaign backend)
#   munge            munged, Slurm's authentication (the fixture runs its own, with a private key)
#   golang-go and five Go libraries' sources
#                    the eStargz fixture: a small Go program (fixtures/estargz/main.go) built on the
#                    format's reference writer, containerd's estargz package. Its Debian source
#                    package is unpacked below, not installed: installing it would pull in the
#                    snapshotter's other dependencies, some 250 packages.
set -euo pipefail

PACKAGES=(
    docker-registry skopeo podman runc uidmap fuse-overlayfs umoci mmdebstrap apache2-utils
    gcc gcc-aarch64-linux-gnu musl-tools zstd make rpm dpkg-dev slurm-wlm munge
    golang-go golang-github-klauspost-compress-dev golang-github-opencontainers-go-digest-dev
    golang-github-pkg-errors-dev golang-github-vbatts-tar-split-dev golang-golang-x-sync-dev
)
STARGZ_SOURCE_PACKAGE=golang-github-containerd-stargz-snapshotter-dev
STARGZ_GOPATH=/opt/auditor/gopath  # its usr/share/gocode holds the unpacked source package
# More can be added for one run: EXTRA_SYSTEM_PACKAGES="pkg1 pkg2" scripts/setup-system.sh
read -r -a EXTRA <<<"${EXTRA_SYSTEM_PACKAGES:-}"
PACKAGES+=("${EXTRA[@]}")

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "setup-system.sh: run as root (or install sudo): apt-get needs it" >&2
        exit 1
    fi
fi

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for package in "${PACKAGES[@]}"; do
    installed "$package" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-system.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_get=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    for attempt in 1 2 3; do
        if "${apt_get[@]}" update -q; then
            break
        fi
        if [ "$attempt" -eq 3 ]; then
            echo "setup-system.sh: apt-get update failed" >&2
            exit 1
        fi
        sleep $((attempt * 5))
    done
    for package in "${missing[@]}"; do
        policy=$(apt-cache policy "$package")  # not piped into grep -q: SIGPIPE + pipefail
        if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
            echo "setup-system.sh: package $package has no installation candidate" >&2
            exit 1
        fi
    done
    "${apt_get[@]}" install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup-system.sh: all ${#PACKAGES[@]} system packages already installed"
fi

# podman and skopeo refuse to pull without a signature policy. Debian's containers-common ships
# one; write the default only if it is missing. Everything else (runtime, cgroup manager,
# insecure loopback registries) the test fixtures pass through CONTAINERS_CONF and
# CONTAINERS_REGISTRIES_CONF, so nothing else under /etc/containers is needed.
if [ ! -e /etc/containers/policy.json ]; then
    "${SUDO[@]}" mkdir -p /etc/containers
    printf '{"default": [{"type": "insecureAcceptAnything"}]}\n' |
        "${SUDO[@]}" tee /etc/containers/policy.json >/dev/null
fi

if [ ! -d "$STARGZ_GOPATH/usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz" ]; then
    echo "setup-system.sh: unpacking $STARGZ_SOURCE_PACKAGE into $STARGZ_GOPATH"
    download=$(mktemp -d)
    fetched=false
    for attempt in 1 2 3; do
        if (cd "$download" && apt-get -o APT::Sandbox::User=root download -q "$STARGZ_SOURCE_PACKAGE"); then
            fetched=true
            break
        fi
        "${SUDO[@]}" apt-get -o Acquire::Retries=3 update -q || true
        sleep $((attempt * 5))
    done
    if [ "$fetched" != true ]; then
        echo "setup-system.sh: could not download $STARGZ_SOURCE_PACKAGE" >&2
        exit 1
    fi
    "${SUDO[@]}" mkdir -p "$STARGZ_GOPATH"
    "${SUDO[@]}" dpkg -x "$download"/"$STARGZ_SOURCE_PACKAGE"_*.deb "$STARGZ_GOPATH"
    rm -rf "$download"
fi

for tool in docker-registry skopeo podman runc umoci mmdebstrap htpasswd gcc zstd make sbatch munge go; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "setup-system.sh: $tool is still missing after the install" >&2
        exit 1
    }
done
