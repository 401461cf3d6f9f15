import { placeholder as a } from '@kvmtest/coco';
export const placeholder = a + 1;
