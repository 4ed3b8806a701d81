//! The deployment files (`deploy/`) against the binary they deploy. Neither
//! Docker nor Kubernetes runs here, so the files are parsed and their wiring
//! checked: the config in the ConfigMap parses with the environment the
//! StatefulSet gives each pod; names, ports and paths agree from file to
//! file; and the server and the binary answer what the probes and the image
//! ask of them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use regex::Regex;
use reqwest::StatusCode;
use sessionbox::config::{Config, Database};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::repo_root;
use crate::support::server::InProcess;

/// What the downward API gives the pods for `status.podIP`.
const POD_IP: &str = "10.1.2.3";

/// The label the StatefulSet controller gives each pod: its name.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The documents of a YAML file (`---` separates them).
fn documents(path: &Path) -> Vec<Yaml> {
    let mut documents = YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    documents.retain(|document| !document.is_null());
    documents
}

/// A field of a manifest by its dotted path (`spec.template.spec`); a
/// missing one fails the test, naming it.
fn at<'a>(node: &'a Yaml, path: &str) -> &'a Yaml {
    let mut here = node;
    for key in path.split('.') {
        here = &here[key];
        assert!(!here.is_badvalue(), "{path}: there is no {key}");
    }
    here
}

fn text<'a>(node: &'a Yaml, path: &str) -> &'a str {
    at(node, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn integer(node: &Yaml, path: &str) -> i64 {
    at(node, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer"))
}

fn list<'a>(node: &'a Yaml, path: &str) -> &'a [Yaml] {
    at(node, path)
        .as_vec()
        .unwrap_or_else(|| panic!("{path} is not a list"))
}

fn strings(node: &Yaml, path: &str) -> Vec<String> {
    list(node, path)
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// A mapping of strings (labels, a selector), as a map.
fn string_map(node: &Yaml, path: &str) -> BTreeMap<String, String> {
    let mapping = at(node, path)
        .as_hash()
        .unwrap_or_else(|| panic!("{path} is not a mapping"));
    mapping
        .iter()
        .map(|(key, value)| {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("{path}: {key:?} is not a string"));
            (key.as_str().expect("a key").to_owned(), value.to_owned())
        })
        .collect()
}

/// A port's protocol, TCP unless it says otherwise (as in Kubernetes).
fn protocol(port: &Yaml) -> &str {
    port["protocol"].as_str().unwrap_or("TCP")
}

/// An ingress-nginx annotation of an Ingress.
fn nginx_annotation<'a>(ingress: &'a Yaml, name: &str) -> Option<&'a str> {
    ingress["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{name}").as_str()]
        .as_str()
}

/// A Kubernetes quantity of bytes (`2Gi`, `512Mi`, `1000`).
fn bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| Some((quantity.strip_suffix(suffix)?, *unit)))
        .unwrap_or((quantity, 1));
    number.parse::<u64>().expect("a whole number of bytes") * unit
}

/// deploy/Dockerfile's instructions, stage by stage.
struct Dockerfile {
    stages: Vec<Vec<(String, String)>>,
}

impl Dockerfile {
    fn load() -> Dockerfile {
        let text = read(&repo_root().join("deploy/Dockerfile")).replace("\\\n", " ");
        let mut stages: Vec<Vec<(String, String)>> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (instruction, arguments) = line.split_once(' ').expect("an instruction");
            let instruction = instruction.to_ascii_uppercase();
            if instruction == "FROM" {
                stages.push(Vec::new());
            }
            let stage = stages.last_mut().expect("FROM comes first");
            stage.push((instruction, arguments.trim().to_owned()));
        }
        Dockerfile { stages }
    }

    /// The arguments of each `instruction` of the image's (the last) stage.
    fn in_image(&self, instruction: &str) -> Vec<&str> {
        let image = self.stages.last().expect("a stage");
        image
            .iter()
            .filter(|(name, _)| name == instruction)
            .map(|(_, arguments)| arguments.as_str())
            .collect()
    }

    /// ENTRYPOINT or CMD, in exec form (a JSON list), as the image keeps it.
    fn exec_form(&self, instruction: &str) -> Vec<String> {
        let last = *self.in_image(instruction).last().expect("the instruction");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{instruction} {last}: {e}"))
    }

    fn exposed(&self) -> BTreeSet<String> {
        self.in_image("EXPOSE")
            .iter()
            .flat_map(|ports| ports.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    /// What the build stages copy from the build context (not `--from` a
    /// stage).
    fn context_sources(&self) -> Vec<&str> {
        let build = &self.stages[..self.stages.len() - 1];
        let copies = build.iter().flatten().filter(|(name, _)| name == "COPY");
        copies
            .filter(|(_, arguments)| !arguments.starts_with("--from"))
            .flat_map(|(_, arguments)| {
                let words: Vec<&str> = arguments.split_whitespace().collect();
                words[..words.len() - 1].to_vec()
            })
            .collect()
    }
}

/// The manifests of deploy/kubernetes, as `kubectl apply -k` sees them, and
/// the image they run.
struct Deployment {
    /// The kustomization's namespace, which every object goes to.
    namespace: String,
    objects: Vec<Yaml>,
    image: Dockerfile,
}

impl Deployment {
    fn load() -> Deployment {
        let dir = repo_root().join("deploy/kubernetes");
        let kustomization = documents(&dir.join("kustomization.yaml")).remove(0);
        let resources = strings(&kustomization, "resources");
        let files: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        assert_eq!(
            resources.iter().cloned().collect::<BTreeSet<_>>(),
            files,
            "kubectl apply -k applies just the files kustomization.yaml lists"
        );
        let objects = resources
            .iter()
            .flat_map(|file| documents(&dir.join(file)))
            .collect();
        Deployment {
            namespace: text(&kustomization, "namespace").to_owned(),
            objects,
            image: Dockerfile::load(),
        }
    }

    fn objects(&self, kind: &'static str) -> impl Iterator<Item = &Yaml> {
        self.objects
            .iter()
            .filter(move |object| text(object, "kind") == kind)
    }

    fn object(&self, kind: &'static str, name: &str) -> &Yaml {
        let mut named = self
            .objects(kind)
            .filter(|object| text(object, "metadata.name") == name);
        let object = named.next().unwrap_or_else(|| panic!("no {kind} {name}"));
        assert!(named.next().is_none(), "two {kind}s named {name}");
        object
    }

    fn statefulset(&self) -> &Yaml {
        let sets: Vec<&Yaml> = self.objects("StatefulSet").collect();
        assert_eq!(sets.len(), 1, "one StatefulSet");
        sets[0]
    }

    fn pod_spec(&self) -> &Yaml {
        at(self.statefulset(), "spec.template.spec")
    }

    fn container(&self) -> &Yaml {
        let containers = list(self.pod_spec(), "containers");
        assert_eq!(containers.len(), 1, "one container");
        &containers[0]
    }

    fn container_port(&self, name: &str) -> &Yaml {
        list(self.container(), "ports")
            .iter()
            .find(|port| port["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("the container has no port named {name}"))
    }

    /// The pods' names: the StatefulSet's name and an ordinal.
    fn pods(&self) -> Vec<String> {
        let set = self.statefulset();
        let name = text(set, "metadata.name");
        (0..integer(set, "spec.replicas"))
            .map(|ordinal| format!("{name}-{ordinal}"))
            .collect()
    }

    /// A pod's labels: the template's and the controller's.
    fn labels(&self, pod: &str) -> BTreeMap<String, String> {
        let mut labels = string_map(self.statefulset(), "spec.template.metadata.labels");
        labels.insert(POD_NAME_LABEL.to_owned(), pod.to_owned());
        labels
    }

    /// The pods a Service (or a PodDisruptionBudget's `matchLabels`) selects.
    fn selected(&self, selector: &BTreeMap<String, String>) -> BTreeSet<String> {
        let matches = |labels: &BTreeMap<String, String>| {
            selector
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        };
        let pods = self.pods().into_iter();
        pods.filter(|pod| matches(&self.labels(pod))).collect()
    }

    /// A pod's environment, as the kubelet sets it from the StatefulSet.
    fn environment(&self, pod: &str) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        for variable in list(self.container(), "env") {
            let name = text(variable, "name");
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_owned()
            } else if !variable["valueFrom"]["fieldRef"].is_badvalue() {
                match text(variable, "valueFrom.fieldRef.fieldPath") {
                    "metadata.name" => pod.to_owned(),
                    "metadata.namespace" => self.namespace.clone(),
                    "status.podIP" => POD_IP.to_owned(),
                    other => panic!("{name}: a fieldRef this test does not know: {other}"),
                }
            } else {
                let reference = at(variable, "valueFrom.secretKeyRef");
                let secret = self.object("Secret", text(reference, "name"));
                let key = text(reference, "key");
                let value = secret["stringData"][key].as_str();
                let value = value.unwrap_or_else(|| panic!("{name}: the Secret has no {key}"));
                value.to_owned()
            };
            environment.insert(name.to_owned(), value);
        }
        environment
    }

    /// What the container runs: the image's ENTRYPOINT and CMD, as the
    /// container's `command` (both) and `args` (CMD) replace them.
    fn command(&self) -> Vec<String> {
        let container = self.container();
        let overridden =
            |key: &str| (!container[key].is_badvalue()).then(|| strings(container, key));
        match (overridden("command"), overridden("args")) {
            (Some(command), args) => [command, args.unwrap_or_default()].concat(),
            (None, args) => {
                let args = args.unwrap_or_else(|| self.image.exec_form("CMD"));
                [self.image.exec_form("ENTRYPOINT"), args].concat()
            }
        }
    }

    /// The config file the command names, as the volume mounted there
    /// holds it: its path and its text.
    fn config_file(&self) -> (String, String) {
        let command = self.command();
        let flag = command.iter().position(|word| word == "--config");
        let path = &command[flag.expect("the command names its config") + 1];
        let mounts = list(self.container(), "volumeMounts");
        let (mount, key) = mounts
            .iter()
            .find_map(|mount| {
                let key = path
                    .strip_prefix(text(mount, "mountPath"))?
                    .strip_prefix('/')?;
                Some((mount, key))
            })
            .unwrap_or_else(|| panic!("nothing is mounted where {path} is"));
        let volume = list(self.pod_spec(), "volumes")
            .iter()
            .find(|volume| text(volume, "name") == text(mount, "name"))
            .expect("the mount's volume");
        let config_map = self.object("ConfigMap", text(volume, "configMap.name"));
        let file = config_map["data"][key].as_str();
        let file = file.unwrap_or_else(|| panic!("{path}: the ConfigMap has no key {key}"));
        (path.clone(), file.to_owned())
    }

    /// The config as `pod` reads it.
    fn config(&self, pod: &str) -> Config {
        let (path, text) = self.config_file();
        let environment = self.environment(pod);
        Config::parse_with_env(&text, &|name| environment.get(name).cloned())
            .unwrap_or_else(|e| panic!("{path} on {pod}: {e:#}"))
    }

    /// Where ingress-nginx sends a request for `path` on `host`: the Service,
    /// its port's name, and the path the node receives.
    fn route(&self, host: &str, path: &str) -> (String, String, String) {
        let mut candidates = Vec::new();
        for ingress in self.objects("Ingress") {
            assert_eq!(
                text(ingress, "spec.ingressClassName"),
                "nginx",
                "the annotations are ingress-nginx's"
            );
            for rule in list(ingress, "spec.rules") {
                if text(rule, "host") == host {
                    let paths = list(rule, "http.paths");
                    candidates.extend(paths.iter().map(|route| (ingress, route)));
                }
            }
        }
        // Per-node paths need use-regex; with it on any Ingress of a host,
        // ingress-nginx reads every path of that host as a case-insensitive
        // regular expression anchored at the start, longest path first.
        assert!(
            candidates
                .iter()
                .any(|(ingress, _)| nginx_annotation(ingress, "use-regex") == Some("true")),
            "no Ingress on {host} uses regular expressions"
        );
        candidates.sort_by_key(|(_, route)| Reverse(text(route, "path").len()));
        for (ingress, route) in candidates {
            let pattern = Regex::new(&format!("(?i)^{}", text(route, "path"))).unwrap();
            let Some(captures) = pattern.captures(path) else {
                continue;
            };
            let mut received = String::new();
            match nginx_annotation(ingress, "rewrite-target") {
                Some(target) => captures.expand(target, &mut received),
                None => received.push_str(path),
            }
            let backend = at(route, "backend.service");
            let service = text(backend, "name").to_owned();
            return (service, text(backend, "port.name").to_owned(), received);
        }
        panic!("no Ingress path on {host} takes {path}")
    }
}

#[test]
fn each_pods_environment_fills_in_the_config_the_image_reads() {
    let deployment = Deployment::load();
    let headless_name = text(deployment.statefulset(), "spec.serviceName");
    let headless = deployment.object("Service", headless_name);
    assert_eq!(text(headless, "spec.clusterIP"), "None", "headless");
    let http = integer(deployment.container_port("http"), "containerPort");
    for pod in deployment.pods() {
        let config = deployment.config(&pod);
        let cluster = config.cluster.as_ref().expect("a [cluster] section");
        assert_eq!(cluster.node_id, pod, "the node id is the pod's name");
        assert_eq!(
            cluster.internal_url,
            format!(
                "http://{pod}.{headless_name}.{}.svc.cluster.local:{http}",
                deployment.namespace
            ),
            "the other nodes reach {pod} by its name in the headless Service"
        );
        assert!(
            matches!(config.server.database, Database::Postgres(_)),
            "the nodes share PostgreSQL"
        );
        assert_eq!(
            config.server.storage(),
            config.server.database,
            "storage too is in PostgreSQL: the root filesystem is read-only"
        );
        assert_eq!(
            config.sip.as_ref().expect("a [sip] section").public_address,
            Some(POD_IP.parse().unwrap())
        );
    }
}

#[test]
fn each_nodes_access_urls_reach_it_and_the_api_reaches_every_ready_node() {
    let deployment = Deployment::load();
    let pods = deployment.pods();
    let all: BTreeSet<String> = pods.iter().cloned().collect();
    let service_of = |name: &str| {
        let service = deployment.object("Service", name);
        let pods = deployment.selected(&string_map(service, "spec.selector"));
        (service, pods)
    };
    for pod in &pods {
        let public_url = deployment
            .config(pod)
            .server
            .public_url
            .expect("public_url");
        let (host, prefix) = public_url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .expect("public_url is scheme://host/prefix");
        let access = format!("/{prefix}/s/0123456789abcdef");
        let (name, port, received) = deployment.route(host, &access);
        assert_eq!(received, "/s/0123456789abcdef", "{access} reaches {name}");
        let (service, selected) = service_of(&name);
        assert_eq!(selected, BTreeSet::from([pod.clone()]), "{access} → {name}");
        assert_eq!(
            service["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true),
            "{name}: a draining node (not ready) still serves its sessions"
        );
        assert!(
            list(service, "spec.ports")
                .iter()
                .any(|p| p["name"].as_str() == Some(&port)),
            "{name} has no port {port}"
        );

        let api = "/v1/apps/demo/sessions";
        let (name, _, received) = deployment.route(host, api);
        assert_eq!(received, api, "the API's paths are not rewritten");
        let (service, selected) = service_of(&name);
        assert_eq!(selected, all, "{name} takes the API on every node");
        assert_ne!(
            service["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true),
            "{name}: a draining node must take no new sessions"
        );
    }

    let headless = text(deployment.statefulset(), "spec.serviceName");
    let (service, selected) = service_of(headless);
    assert_eq!(selected, all);
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "{headless}: forwards and calls still reach a draining node"
    );

    let per_pod: BTreeSet<String> = deployment
        .objects("Service")
        .filter_map(|service| service["spec"]["selector"][POD_NAME_LABEL].as_str())
        .map(str::to_owned)
        .collect();
    assert_eq!(per_pod, all, "one per-pod Service for each replica");

    let budgets: Vec<&Yaml> = deployment.objects("PodDisruptionBudget").collect();
    assert_eq!(budgets.len(), 1);
    assert_eq!(integer(budgets[0], "spec.maxUnavailable"), 1);
    let selector = string_map(budgets[0], "spec.selector.matchLabels");
    assert_eq!(deployment.selected(&selector), all);
}

#[test]
fn ports_agree_from_the_config_to_the_container_the_services_and_the_image() {
    let deployment = Deployment::load();
    let config = deployment.config(&deployment.pods()[0]);
    let http = config.server.listen.port();
    let sip = config.sip.as_ref().expect("a [sip] section");
    let sip_port = sip.listen.port();
    let [rtp_low, rtp_high] = sip.rtp_ports.expect("sip.rtp_ports");

    let declared: BTreeSet<(i64, String)> = list(deployment.container(), "ports")
        .iter()
        .map(|port| (integer(port, "containerPort"), protocol(port).to_owned()))
        .collect();
    let expected = BTreeSet::from([
        (i64::from(http), "TCP".to_owned()),
        (i64::from(sip_port), "UDP".to_owned()),
        (i64::from(sip_port), "TCP".to_owned()),
    ]);
    assert_eq!(declared, expected, "the container's ports are the config's");
    assert_eq!(
        integer(deployment.container_port("http"), "containerPort"),
        i64::from(http)
    );
    assert_eq!(
        text(
            deployment.statefulset(),
            "spec.template.metadata.annotations.sessionbox/rtp-ports"
        ),
        format!("{rtp_low}-{rtp_high}")
    );

    for service in deployment.objects("Service") {
        let name = text(service, "metadata.name");
        for port in list(service, "spec.ports") {
            let target = text(port, "targetPort");
            let container_port = deployment.container_port(target);
            assert_eq!(
                protocol(container_port),
                protocol(port),
                "Service {name}: the protocol of {target}"
            );
        }
    }

    let expected = BTreeSet::from([
        format!("{http}/tcp"),
        format!("{sip_port}/udp"),
        format!("{sip_port}/tcp"),
        format!("{rtp_low}-{rtp_high}/udp"),
    ]);
    assert_eq!(
        deployment.image.exposed(),
        expected,
        "the Dockerfile's EXPOSE"
    );
}

#[test]
fn the_probes_ask_the_http_port_for_liveness_and_readiness() {
    let deployment = Deployment::load();
    let container = deployment.container();
    let listen = deployment.config(&deployment.pods()[0]).server.listen;
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = at(container, &format!("{probe}.httpGet"));
        assert_eq!(text(get, "path"), path, "{probe}");
        let port = deployment.container_port(text(get, "port"));
        assert_eq!(
            integer(port, "containerPort"),
            i64::from(listen.port()),
            "{probe}"
        );
    }
}

/// Liveness must hold while a node drains, or the kubelet would restart a
/// node that is finishing its sessions; readiness must not, or the API
/// would keep sending it new sessions.
#[tokio::test]
async fn the_server_answers_the_probes_and_only_readiness_fails_while_draining() {
    const ADMIN_KEY: &str = "deploy-test-admin-key";
    let deployment = Deployment::load();
    let container = deployment.container();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("history.db");
    let config = Config::parse(&format!(
        "[server]\ndatabase = {database:?}\nadmin_key = {ADMIN_KEY:?}\n"
    ))
    .unwrap();
    let server = InProcess::start(config).await;
    let client = reqwest::Client::new();
    let probe = async |probe: &str| {
        let path = text(container, &format!("{probe}.httpGet.path"));
        let url = format!("{}{path}", server.url);
        client.get(url).send().await.unwrap().status()
    };
    for name in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(probe(name).await, StatusCode::OK, "{name}");
    }

    let drain = client
        .post(format!("{}/v1/admin/drain", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(drain.status().is_success(), "{}", drain.status());
    assert_eq!(probe("livenessProbe").await, StatusCode::OK);
    assert_eq!(
        probe("readinessProbe").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.stop().await;
}

#[test]
fn the_grace_period_covers_the_drain_and_the_shutdown() {
    let deployment = Deployment::load();
    let server = deployment.config(&deployment.pods()[0]).server;
    let grace = integer(deployment.pod_spec(), "terminationGracePeriodSeconds");
    let needed = server.drain_deadline + server.shutdown_deadline;
    assert!(
        u64::try_from(grace).unwrap() * 1000 >= needed,
        "terminationGracePeriodSeconds {grace} s: the kubelet kills the node \
         before its drain ({} ms) and shutdown ({} ms) are over",
        server.drain_deadline,
        server.shutdown_deadline
    );
}

#[test]
fn the_pods_run_as_the_images_user_on_a_read_only_root_with_a_bounded_cache() {
    let deployment = Deployment::load();
    let pod = deployment.pod_spec();
    let container = deployment.container();
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let user = *deployment.image.in_image("USER").last().expect("USER");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0);
    assert_eq!(integer(pod, "securityContext.runAsUser"), uid);
    assert_eq!(
        at(container, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );

    let server = deployment.config(&deployment.pods()[0]).server;
    let cache_dir = server.cache_dir.expect("server.cache_dir, on a volume");
    let mount = list(container, "volumeMounts")
        .iter()
        .find(|mount| Path::new(text(mount, "mountPath")) == cache_dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", cache_dir.display()));
    let volume = list(pod, "volumes")
        .iter()
        .find(|volume| text(volume, "name") == text(mount, "name"))
        .expect("the cache's volume");
    let size_limit = bytes(text(volume, "emptyDir.sizeLimit"));
    assert!(
        size_limit > server.cache_max_bytes,
        "the kubelet evicts a pod whose emptyDir passes {size_limit} bytes; \
         the cache holds up to {}",
        server.cache_max_bytes
    );
}

#[test]
fn the_image_runs_a_command_the_binary_accepts() {
    let deployment = Deployment::load();
    let command = deployment.command();
    let program = &command[0];
    assert!(
        deployment
            .image
            .in_image("COPY")
            .iter()
            .any(|copy| copy.ends_with(&format!(" /usr/local/bin/{program}"))),
        "the image puts {program} on the PATH"
    );
    // --help after the arguments: clap checks each of them first.
    let output = Command::new(env!("CARGO_BIN_EXE_sessionbox"))
        .args(&command[1..])
        .arg("--help")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("--config"), "{stdout}");
}

#[test]
fn the_image_builds_from_what_the_build_context_holds() {
    let image = Dockerfile::load();
    let ignore = read(&repo_root().join(".dockerignore"));
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(patterns[0], "*", ".dockerignore lists what the build keeps");
    let kept: BTreeSet<&str> = patterns[1..]
        .iter()
        .map(|pattern| pattern.strip_prefix('!').expect("an exception"))
        .collect();
    let sources = image.context_sources();
    for source in &sources {
        assert!(kept.contains(source), ".dockerignore keeps out {source}");
    }

    let manifest = read(&repo_root().join("Cargo.toml"));
    let members = Regex::new(r"members\s*=\s*\[([^\]]*)\]").unwrap();
    let members = &members.captures(&manifest).expect("workspace members")[1];
    for member in Regex::new(r#""([^"]+)""#).unwrap().captures_iter(members) {
        let member = &member[1];
        assert!(
            sources
                .iter()
                .any(|source| member.starts_with(&format!("{source}/"))),
            "the image's build copies no {member}"
        );
    }
}
