// Shared by every shader: workgroup index over a 2-D dispatch (more than 65535 groups
// are spread over y), and a tanh that stays finite for large arguments.
uint group_index() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

float safe_tanh(float x) {
  const float t = exp(-2.0 * abs(x));
  return sign(x) * (1.0 - t) / (1.0 + t);
}
