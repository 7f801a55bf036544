-- Argo CD health of a modelwarden DriftPolicy (resource.customizations.health.modelwarden.io_DriftPolicy).
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
  return hs
end
if obj.metadata.generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition
end
if conditions["InvalidSpec"] ~= nil and conditions["InvalidSpec"].status == "True" then
  hs.status = "Degraded"
  hs.message = "InvalidSpec: " .. (conditions["InvalidSpec"].message or "")
  return hs
end
local phase = status.phase
local said = conditions["Ready"]
if conditions["Breached"] ~= nil and conditions["Breached"].status == "True" then
  said = conditions["Breached"]
end
if said ~= nil and said.message ~= nil and said.message ~= "" then
  hs.message = phase .. ": " .. said.message
else
  hs.message = phase
end
if phase == "Suspended" then
  hs.status = "Suspended"
elseif phase == "Failing" or phase == "Error" then
  -- A breached model, or a policy that cannot judge it (Prometheus down, target missing).
  hs.status = "Degraded"
elseif phase == "Passing" or phase == "Warning" then
  hs.status = "Healthy"
else
  -- Pending, InsufficientData: no judgement yet.
  hs.status = "Progressing"
end
return hs
