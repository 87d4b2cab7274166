type TypedArray = Float64Array | Uint32Array;
type TypedArrayConstructor<T extends TypedArray> = new (length: number) => T;

/** An append-only typed array: a million rows cost bytes, not objects. */
export class Growable<T extends TypedArray> {
  private data: T;
  length = 0;

  constructor(private readonly make: TypedArrayConstructor<T>) {
    this.data = new make(1024);
  }

  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new this.make(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }

  /** The values as a typed array of exactly `length` (a view, no copy). */
  finish(): T {
    return this.data.subarray(0, this.length) as T;
  }
}
