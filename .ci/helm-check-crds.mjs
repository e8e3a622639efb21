// Validates custom resources from a JSON file (an array of objects) against the models
// that @kubernetes-models generates from the prometheus-operator and KEDA API types.
// Prints one line per object and exits with 1 when any is invalid.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const models = {
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};

let failures = 0;
for (const { source, object } of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const type = `${object.apiVersion}/${object.kind}`;
  const name = `${source}: ${object.kind}/${object.metadata?.name}`;
  const Model = models[type];
  if (!Model) {
    console.log(`ERROR ${name}: no schema for ${type}`);
    failures++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok    ${name} (CRD model)`);
  } catch (error) {
    console.log(`ERROR ${name}: ${error.message}`);
    failures++;
  }
}
process.exit(failures ? 1 : 0);
