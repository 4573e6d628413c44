#!/usr/bin/env bash
# Checks the chart renders as intended: helm lint, then helm template with
# the defaults and with values that change what it writes; and that the
# alerting rules are valid and pass their unit tests. Needs helm and
# promtool on PATH (.ci/run installs both from the Go module proxy).
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "chart check: $*" >&2; exit 1; }
# An NKey user public key (not a secret; made for these checks).
pub=UCFE6KDZEFZFDD5XAZKXW62A6NP7LVYMRQOEG2NZEICGJZBLQFOGXKAX
natsauth=(--set nats.auth.existingSecret=nk --set nats.auth.nkeyPublicKey=$pub --set nats.routeAuth.existingSecret=routes)
render() { helm template t . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok "${natsauth[@]}" "$@"; }

helm lint . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok "${natsauth[@]}" >/dev/null

out=$(render)
# GOMEMLIMIT is 90% of each container's memory limit (1Gi and 2Gi).
grep -q 'value: "921MiB"' <<<"$out" || fail "junction GOMEMLIMIT is not 921MiB for a 1Gi limit"
grep -q 'value: "1843MiB"' <<<"$out" || fail "nats GOMEMLIMIT is not 1843MiB for a 2Gi limit"
grep -q 'resourceFieldRef' <<<"$out" && fail "GOMEMLIMIT still taken from the whole memory limit"
grep -q 'seconds: 5' <<<"$out" || fail "no preStop sleep on the Junction pods"
# An upgrade must not run two versions of the engine on one store.
grep -A1 '^  strategy:' <<<"$out" | grep -q 'type: Recreate' || fail "the Junction Deployment is not replaced by Recreate by default"
out=$(render --set junction.updateStrategy.type=RollingUpdate)
grep -A1 '^  strategy:' <<<"$out" | grep -q 'type: RollingUpdate' || fail "junction.updateStrategy is not the Deployment's strategy"

out=$(render --set junction.resources.limits.memory=768Mi --set junction.preStopSleepSeconds=0)
grep -q 'value: "691MiB"' <<<"$out" || fail "junction GOMEMLIMIT is not 691MiB for a 768Mi limit"
grep -q 'sleep:' <<<"$out" && fail "preStopSleepSeconds=0 still renders a preStop sleep"

out=$(render --set junction.resources.limits=null)
[ "$(grep -c 'name: GOMEMLIMIT' <<<"$out")" = 1 ] || fail "a Junction container without a memory limit got a GOMEMLIMIT"

if render --set junction.resources.limits.memory=1.5Gi >/dev/null 2>&1; then
  fail "a fractional memory limit rendered (GOMEMLIMIT cannot be worked out from it)"
fi
if helm template t . "${natsauth[@]}" >/dev/null 2>&1; then
  fail "rendered without the admin token Secret"
fi
# /fhir is exposed beyond the pod: it needs its token Secret, or an
# explicit statement that something in front authenticates.
if helm template t . --set junction.adminToken.existingSecret=tok "${natsauth[@]}" >/dev/null 2>&1; then
  fail "rendered an exposed /fhir without the FHIR token Secret"
fi
out=$(helm template t . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.allowUnauthenticated=true "${natsauth[@]}")
grep -q 'allow_unauthenticated: true' <<<"$out" || fail "fhirToken.allowUnauthenticated does not reach the fhir input"
out=$(render)
grep -q 'bearer_token: file:/var/run/secrets/junction-fhir/token' <<<"$out" || fail "the FHIR token Secret does not reach the fhir input"

# HTTPS from a kubernetes.io/tls Secret: the http block names its files,
# the Secret is mounted whole (renewals reach the files), the probes use
# HTTPS; with clientCA, client certificates stand in for the FHIR token.
out=$(render --set junction.httpTLS.existingSecret=jtls)
cfg=$(awk '/junction.yaml: \|/{on=1; next} on && /^[^ ]/{on=0} on' <<<"$out")
http=$(awk '/^    http:/{on=1; next} /^    [a-z]/{on=0} on' <<<"$cfg")
grep -q '^        cert: file:/var/run/secrets/junction-http-tls/tls.crt$' <<<"$http" || fail "httpTLS does not reach http.tls.cert"
grep -q '^        key: file:/var/run/secrets/junction-http-tls/tls.key$' <<<"$http" || fail "httpTLS does not reach http.tls.key"
grep -q 'client_ca' <<<"$http" && fail "http.tls.client_ca set without httpTLS.clientCA"
[ "$(grep -c 'scheme: HTTPS' <<<"$out")" = 3 ] || fail "the probes do not all use HTTPS with httpTLS"
grep -q 'secretName: jtls' <<<"$out" || fail "the httpTLS Secret is not mounted"
grep -A3 'name: http-tls' <<<"$out" | grep -q 'subPath' && fail "the httpTLS Secret is mounted by subPath, so renewals never reach it"
# The notes show the URLs the listener answers on.
notes=$(helm install --dry-run=client t . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok "${natsauth[@]}" --set junction.httpTLS.existingSecret=jtls | sed -n '/^NOTES:/,$p')
grep -q 'curl -sk https://localhost:8080/readyz' <<<"$notes" || fail "NOTES.txt gives plain-HTTP URLs with httpTLS"
grep -q 'curl -s localhost:8080/readyz' <<<"$notes" && fail "NOTES.txt gives a plain-HTTP URL with httpTLS"
out=$(render | grep -c 'scheme: HTTPS' || true)
[ "$out" = 0 ] || fail "probes use HTTPS without httpTLS"
out=$(helm template t . --set junction.adminToken.existingSecret=tok --set junction.httpTLS.existingSecret=jtls --set junction.httpTLS.clientCA=true "${natsauth[@]}")
grep -q 'client_ca: file:/var/run/secrets/junction-http-tls/ca.crt' <<<"$out" || fail "httpTLS.clientCA does not reach http.tls.client_ca"
grep -q 'bearer_token' <<<"$out" && fail "a FHIR token was set without fhirToken"

# NATS admits only Junction's NKey user: its public key in nats.conf, its
# seed mounted in Junction's pods and named by nats.nkey_seed. Without
# them rendering fails, unless the values say something else keeps other
# clients off; a seed given as the public key is refused.
out=$(render)
grep -q "{ nkey: $pub }" <<<"$out" || fail "nats.conf does not admit the NKey user"
grep -q 'nkey_seed: file:/var/run/secrets/junction-nats/seed' <<<"$out" || fail "junction.yaml does not name the NKey seed"
grep -A2 'name: nats-nkey' <<<"$out" | grep -q 'secretName: nk' || fail "the NKey seed Secret is not mounted"
if helm template t . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok --set nats.routeAuth.existingSecret=routes >/dev/null 2>&1; then
  fail "rendered a NATS that admits any client"
fi
out=$(helm template t . --set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok --set nats.auth.allowUnauthenticated=true --set nats.routeAuth.allowUnauthenticated=true)
grep -q 'authorization' <<<"$out" && fail "nats.auth.allowUnauthenticated still renders an authorization block"
grep -q 'nkey_seed' <<<"$out" && fail "nats.auth.allowUnauthenticated still names an NKey seed"
if render --set nats.auth.nkeyPublicKey=SUNOTAREALSEEDONLYTHESHAPEOFONE >/dev/null 2>&1; then
  fail "rendered with a seed as the NKey public key"
fi
if render --set nats.auth.existingSecret= >/dev/null 2>&1; then
  fail "rendered an NKey public key without the seed's Secret"
fi

# NATS routes authenticate: nats.conf takes the password and the route
# URLs carrying it from the environment, which the StatefulSet fills from
# the Secret, so the ConfigMap holds no secret. Without the Secret
# rendering fails, unless the values say something else keeps other
# servers off the route port. A real nats-server reads the rendered
# configuration with the environment the pods would give it.
conf=$(render -s templates/nats-configmap.yaml | awk '/nats.conf: \|/{on=1; next} on && /^[^ ]/{on=0} on' | sed 's/^    //')
grep -q 'password: \$NATS_ROUTE_PASSWORD' <<<"$conf" || fail "nats.conf's cluster block does not take the route password from the environment"
grep -q 'nats://' <<<"$conf" && fail "nats.conf names a route URL itself, which cannot carry the password"
sts=$(render -s templates/nats-statefulset.yaml)
grep -A3 'name: NATS_ROUTE_PASSWORD' <<<"$sts" | grep -q 'name: routes' || fail "the route password does not come from nats.routeAuth.existingSecret"
[ "$(grep -c 'value: "nats://route:$(NATS_ROUTE_PASSWORD)@t-junction-nats-[0-9]' <<<"$sts")" = 3 ] || fail "the StatefulSet does not give three route URLs carrying the password"
grep -q 'secretKeyRef' <<<"$(render -s templates/nats-configmap.yaml)" && fail "the NATS ConfigMap refers to a Secret"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "$conf" >"$tmp/nats.conf"
routeenv=(NATS_ROUTE_PASSWORD=checkonly)
while read -r n v; do routeenv+=("$n=${v//\$(NATS_ROUTE_PASSWORD)/checkonly}"); done < <(awk '/- name: NATS_ROUTE_[0-9]/{n=$3} /value: "nats:\/\/route:/ && n{gsub(/"/, "", $2); print n, $2; n=""}' <<<"$sts")
[ "${#routeenv[@]}" = 4 ] || fail "could not read the route URLs from the StatefulSet"
env "${routeenv[@]}" go run github.com/nats-io/nats-server/v2 -t -c "$tmp/nats.conf" >/dev/null 2>&1 || fail "nats-server does not accept the rendered nats.conf: $(env "${routeenv[@]}" go run github.com/nats-io/nats-server/v2 -t -c "$tmp/nats.conf" 2>&1)"
if env NATS_ROUTE_PASSWORD=checkonly go run github.com/nats-io/nats-server/v2 -t -c "$tmp/nats.conf" >/dev/null 2>&1; then
  fail "nats-server accepted nats.conf without the route URLs in its environment (the check above proves nothing)"
fi
if render --set nats.routeAuth.existingSecret= >/dev/null 2>&1; then
  fail "rendered NATS routes that admit any server"
fi
conf=$(render --set nats.routeAuth.existingSecret= --set nats.routeAuth.allowUnauthenticated=true -s templates/nats-configmap.yaml)
grep -q 'NATS_ROUTE' <<<"$conf" && fail "nats.routeAuth.allowUnauthenticated still takes a route password"
[ "$(grep -c 'nats://t-junction-nats-[0-9]' <<<"$conf")" = 3 ] || fail "nats.routeAuth.allowUnauthenticated does not list the three routes"

# The NATS monitoring port is not open to every pod.
np=$(render -s templates/nats-networkpolicy.yaml)
mon=$(awk '/- from:/{block=""} {block=block"\n"$0} /port: monitor/{print block}' <<<"$np")
grep -q 'component: engine' <<<"$mon" || fail "Junction pods cannot reach the NATS monitoring port"
np=$(render -s templates/nats-networkpolicy.yaml --set-json 'networkPolicy.natsMonitorFrom=[{"namespaceSelector":{"matchLabels":{"team":"mon"}}}]')
grep -q 'team: mon' <<<"$np" || fail "networkPolicy.natsMonitorFrom is not rendered"

# What Junction would refuse at start is refused at render time: a
# shipped route reading an input the values removed, or naming a
# destination they replaced, and settings the chart writes itself given
# again in junction.config.
refused() {
  local want=$1; shift
  local msg
  if msg=$(render "$@" 2>&1 >/dev/null); then
    fail "rendered with $*"
  fi
  grep -q "$want" <<<"$msg" || fail "rendering with $* failed without saying $want: $msg"
}
refused 'reads input "fhir"' --set junction.inputs.fhir=null
render --set junction.inputs.fhir=null --set 'routes.files.fhir-inbound-to-store\.yaml=null' >/dev/null || fail "the fhir input and its route could not be removed together"
refused 'which junction.destinations does not configure' --set junction.destinations.ehr.type=file --set junction.destinations.ehr.dir=out/ehr
refused 'junction.config.http' --set junction.config.http.read_timeout=2m
refused 'junction.config.nats' --set junction.config.nats.partitions=32
# junction.nats and junction.http add settings to the blocks the chart
# writes, but not the ones it writes itself.
out=$(render --set junction.nats.partitions=32 --set junction.nats.ingress_max_age=336h --set junction.http.read_timeout=2m)
cfg=$(awk '/junction.yaml: \|/{on=1; next} on && /^[^ ]/{on=0} on' <<<"$out")
awk '/^    nats:/{on=1; next} /^    [a-z]/{on=0} on' <<<"$cfg" | grep -q '^      partitions: 32$' || fail "junction.nats.partitions is not in the nats block"
awk '/^    nats:/{on=1; next} /^    [a-z]/{on=0} on' <<<"$cfg" | grep -q '^      ingress_max_age: 336h$' || fail "junction.nats.ingress_max_age is not in the nats block"
awk '/^    http:/{on=1; next} /^    [a-z]/{on=0} on' <<<"$cfg" | grep -q '^      read_timeout: 2m$' || fail "junction.http.read_timeout is not in the http block"
refused 'junction.nats.url' --set junction.nats.url=nats://elsewhere:4222
refused 'junction.nats.replicas' --set junction.nats.replicas=1
refused 'junction.nats.allow_unsafe' --set junction.nats.allow_unsafe=true
refused 'junction.nats.nkey_seed' --set junction.nats.nkey_seed=file:/elsewhere
refused 'junction.http.listen' --set junction.http.listen=0.0.0.0:9090
refused 'junction.http.tokens' --set-json 'junction.http.tokens=[]'
refused 'junction.http.tls' --set junction.http.tls.cert=file:/x
render --set routes.existingConfigMap=mine --set junction.inputs.fhir=null >/dev/null || fail "routes from an existing ConfigMap are not the chart's to check"
render --set junction.config.shutdown_timeout=30s >/dev/null || fail "junction.config refused a setting the chart does not write"
# The pod is given time to drain: the grace period covers the preStop
# sleep, Junction's shutdown_timeout and closing the store.
refused 'give at least 97' --set junction.config.shutdown_timeout=1m30s
refused 'give at least 37' --set junction.terminationGracePeriodSeconds=20
refused 'give a Go duration' --set junction.config.shutdown_timeout=30
render --set junction.config.shutdown_timeout=1m30s --set junction.terminationGracePeriodSeconds=97 >/dev/null || fail "a grace period covering a 90s shutdown was refused"
render --set junction.config.shutdown_timeout=0 >/dev/null || fail "shutdown_timeout 0 was refused"

# An external NATS cluster: Junction is pointed at it and the chart
# deploys no NATS of its own; every server's monitoring endpoint and the
# seed's Secret are required, the NKey public key and route password are
# not (those are the chart's servers' settings).
ext=(--set junction.adminToken.existingSecret=tok --set junction.fhirToken.existingSecret=ftok
  --set 'nats.external.url=nats://n0.platform:4222\,nats://n1.platform:4222\,nats://n2.platform:4222'
  --set-json 'nats.external.monitorUrls=["http://n0.platform:8222","http://n1.platform:8222","http://n2.platform:8222"]')
out=$(helm template t . "${ext[@]}" --set nats.auth.existingSecret=nk)
cfg=$(awk '/junction.yaml: \|/{on=1; next} on && /^[^ ]/{on=0} on' <<<"$out")
grep -q '^      url: "nats://n0.platform:4222,nats://n1.platform:4222,nats://n2.platform:4222"$' <<<"$cfg" || fail "nats.external.url does not reach nats.url"
[ "$(grep -c '^        - "http://n[0-2].platform:8222"$' <<<"$cfg")" = 3 ] || fail "nats.external.monitorUrls do not reach nats.monitor_urls"
grep -q 't-junction-nats' <<<"$cfg" && fail "junction.yaml still names the chart's NATS with an external one"
grep -q 'nkey_seed: file:/var/run/secrets/junction-nats/seed' <<<"$cfg" || fail "the NKey seed is not named with an external NATS"
grep -q '^kind: StatefulSet' <<<"$out" && fail "an external NATS still renders the chart's NATS StatefulSet"
grep -Eq 'name: t-junction-nats|component: nats' <<<"$out" && fail "an external NATS still renders one of the chart's NATS objects"
if helm template t . "${ext[@]}" >/dev/null 2>&1; then
  fail "rendered an external NATS without the seed's Secret"
fi
helm template t . "${ext[@]}" --set nats.auth.allowUnauthenticated=true >/dev/null || fail "nats.auth.allowUnauthenticated refused with an external NATS"
# An external NATS in operator (JWT) mode admits a user by its .creds
# file, not a bare NKey seed: the Secret's file is mounted in Junction's
# pods and named by nats.credentials.
out=$(helm template t . "${ext[@]}" --set nats.auth.credentialsSecret=nc)
cfg=$(awk '/junction.yaml: \|/{on=1; next} on && /^[^ ]/{on=0} on' <<<"$out")
grep -q '^      credentials: file:/var/run/secrets/junction-nats-creds/user.creds$' <<<"$cfg" || fail "nats.auth.credentialsSecret does not reach nats.credentials"
grep -q 'nkey_seed' <<<"$cfg" && fail "nats.auth.credentialsSecret still names an NKey seed"
grep -A2 'name: nats-creds$' <<<"$out" | grep -q 'secretName: nc' || fail "the .creds Secret is not mounted"
grep -B1 -A1 'path: user.creds' <<<"$out" | grep -q 'key: creds' || fail "the .creds Secret's key is not mounted as user.creds"
if helm template t . "${ext[@]}" --set nats.auth.credentialsSecret=nc --set nats.auth.existingSecret=nk >/dev/null 2>&1; then
  fail "rendered both a .creds file and an NKey seed, which Junction refuses"
fi
if render --set nats.auth.credentialsSecret=nc >/dev/null 2>&1; then
  fail "rendered a .creds file for the chart's own NATS, whose servers admit an NKey user"
fi
refused 'nats.auth (existingSecret' --set junction.nats.credentials=file:/x
if helm template t . "${ext[@]}" --set nats.auth.existingSecret=nk --set-json 'nats.external.monitorUrls=[]' >/dev/null 2>&1; then
  fail "rendered an external NATS without its monitoring endpoints"
fi

# The alerting rules: a valid Prometheus rules file whose unit tests
# (input series, then the alerts that fire when) pass. The chart renders
# it, unchanged, as a PrometheusRule, and a ServiceMonitor scraping
# /metrics, only when asked.
command -v promtool >/dev/null || fail "promtool is not on PATH (go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0)"
promtool check rules files/alerts.yaml >/dev/null || fail "promtool does not accept files/alerts.yaml: $(promtool check rules files/alerts.yaml 2>&1)"
promtool test rules files/alerts_test.yaml >/dev/null || fail "the alerting rules fail their tests: $(promtool test rules files/alerts_test.yaml 2>&1)"
out=$(render)
grep -q 'kind: PrometheusRule' <<<"$out" && fail "a PrometheusRule is rendered by default"
grep -q 'kind: ServiceMonitor' <<<"$out" && fail "a ServiceMonitor is rendered by default"
rule=$(render -s templates/prometheusrule.yaml --set monitoring.prometheusRule.enabled=true --set monitoring.prometheusRule.labels.release=kps)
grep -q '^apiVersion: monitoring.coreos.com/v1$' <<<"$rule" || fail "the PrometheusRule is not monitoring.coreos.com/v1"
grep -q '^kind: PrometheusRule$' <<<"$rule" || fail "monitoring.prometheusRule.enabled renders no PrometheusRule"
grep -q '^    release: kps$' <<<"$rule" || fail "monitoring.prometheusRule.labels are not the PrometheusRule's labels"
# Its spec is the rules file itself, which promtool reads back.
awk '/^spec:$/{on=1; next} on' <<<"$rule" | sed 's/^  //' >"$tmp/rules.yaml"
diff <(sed 's/[[:space:]]*$//' files/alerts.yaml) <(sed 's/[[:space:]]*$//' "$tmp/rules.yaml") >/dev/null || fail "the PrometheusRule's spec is not files/alerts.yaml: $(diff files/alerts.yaml "$tmp/rules.yaml")"
promtool check rules "$tmp/rules.yaml" >/dev/null || fail "promtool does not accept the PrometheusRule's rules"
sm=$(render -s templates/servicemonitor.yaml --set monitoring.serviceMonitor.enabled=true --set monitoring.serviceMonitor.labels.release=kps)
grep -q '^kind: ServiceMonitor$' <<<"$sm" || fail "monitoring.serviceMonitor.enabled renders no ServiceMonitor"
grep -q '^    release: kps$' <<<"$sm" || fail "monitoring.serviceMonitor.labels are not the ServiceMonitor's labels"
grep -A3 'matchLabels:' <<<"$sm" | grep -q 'component: engine' || fail "the ServiceMonitor does not select Junction's Services"
grep -q '^    - port: http$' <<<"$sm" || fail "the ServiceMonitor does not scrape the http port"
grep -q '^      path: /metrics$' <<<"$sm" || fail "the ServiceMonitor does not scrape /metrics"
grep -q '^      interval: 30s$' <<<"$sm" || fail "the ServiceMonitor's interval is not 30s"
grep -q 'scheme: https' <<<"$sm" && fail "the ServiceMonitor scrapes HTTPS without httpTLS"
sm=$(render -s templates/servicemonitor.yaml --set monitoring.serviceMonitor.enabled=true --set junction.httpTLS.existingSecret=jtls --set monitoring.serviceMonitor.tlsConfig.ca.secret.name=jtls --set monitoring.serviceMonitor.tlsConfig.ca.secret.key=ca.crt)
grep -q '^      scheme: https$' <<<"$sm" || fail "the ServiceMonitor does not scrape HTTPS with httpTLS"
grep -A4 '^      tlsConfig:$' <<<"$sm" | grep -q 'name: jtls' || fail "monitoring.serviceMonitor.tlsConfig does not reach the endpoint"

echo "chart check passed"
