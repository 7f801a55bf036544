-- Argo CD health of a modelwarden ModelDeployment (resource.customizations.health.modelwarden.io_ModelDeployment).
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if obj.metadata.generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. obj.metadata.generation
  return hs
end
local conditions = {}
for _, condition in ipairs(status.conditions) do
  conditions[condition.type] = condition
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end
local function says(type)
  local message = conditions[type].message
  if message == nil or message == "" then
    return conditions[type].reason
  end
  return conditions[type].reason .. ": " .. message
end
if holds("InvalidSpec") then
  hs.status = "Degraded"
  hs.message = says("InvalidSpec")
  return hs
end
if holds("Stalled") then
  -- A rolled-back version the spec still names, or a canary step past its progress deadline.
  hs.status = "Degraded"
  hs.message = says("Stalled")
  return hs
end
if status.phase == "Degraded" or status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message
  return hs
end
if holds("Paused") then
  -- Paused by a person, or a step awaiting approval (kubectl modelwarden resume / approve).
  hs.status = "Suspended"
  hs.message = says("Paused")
  return hs
end
if holds("Reconciling") then
  hs.status = "Progressing"
  hs.message = status.message
  return hs
end
if holds("Ready") then
  hs.status = "Healthy"
  hs.message = status.message
  return hs
end
hs.status = "Progressing"
if conditions["Ready"] ~= nil then
  hs.message = says("Ready")
else
  hs.message = status.message
end
return hs
