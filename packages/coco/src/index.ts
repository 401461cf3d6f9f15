export type { GuestMode, PortRequestKind, TagBitKind, VmShape, VmType, VmTypeTraits } from './vm-type.js';
export {
  GUEST_MODE_PARAMS,
  isVmType,
  VM_SHAPE_DEFAULT,
  VM_TYPE_NUMBER,
  VM_TYPE_TRAITS,
  VM_TYPES,
  vmShape,
  vmTypeFromNumber,
} from './vm-type.js';
