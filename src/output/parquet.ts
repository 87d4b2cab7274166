import {
  Table as ArrowTable,
  type Data,
  Field,
  FixedSizeList,
  Float16,
  Float32,
  Int8,
  makeData,
  makeVector,
  tableToIPC,
  Uint8,
  Utf8,
  vectorFromArray,
} from "apache-arrow";
import {
  Compression,
  transformParquetStream,
  Table as WasmTable,
  WriterPropertiesBuilder,
} from "parquet-wasm/node";
import { paperIdText } from "../input/ids.js";
import type { RowReader } from "../input/rows.js";
import { writeAll, writeThenCommitAsync } from "./atomic.js";
import { type EncodedChunk, ROWS_PER_CHUNK } from "./derive.js";
import type { Encoder } from "./dtype.js";

/**
 * `<alias>.parquet`: columns paper_id (string: a string id's value, a number
 * id's JSON text), paragraph_index (int64), model (string) and embedding (a
 * fixed-size list of the output dtype; packed bytes for binary dtypes), one
 * row group per chunk of rows read back from the matrix. Written with
 * parquet-wasm (Apache arrow-rs's Parquet writer compiled to WebAssembly):
 * it stores the Arrow schema in the file, so pyarrow, pandas and DuckDB get
 * the fixed-size list back as one, and it takes record batches as a stream,
 * so only one chunk is in memory at a time. apache-arrow builds the batches.
 */
export async function exportParquet(
  path: string,
  chunks: Iterator<EncodedChunk>,
  encoder: Encoder,
  reader: RowReader,
  modelName: string,
): Promise<void> {
  const batches = new ReadableStream({
    pull(controller) {
      const next = chunks.next();
      if (next.done) {
        controller.close();
        return;
      }
      const chunk = next.value;
      const ids = Array.from({ length: chunk.count }, (_, r) => reader.ids(chunk.first + r));
      const values = valuesData(encoder, chunk.bytes);
      const embedding = makeData({
        type: new FixedSizeList(encoder.width, new Field("item", values.type, false)),
        length: chunk.count,
        nullCount: 0,
        child: values,
      });
      const table = new ArrowTable({
        paper_id: vectorFromArray(
          ids.map((id) => paperIdText(id.paperId)),
          new Utf8(),
        ),
        paragraph_index: makeVector(BigInt64Array.from(ids, (id) => BigInt(id.paragraphIndex))),
        model: vectorFromArray(
          Array.from({ length: chunk.count }, () => modelName),
          new Utf8(),
        ),
        embedding: makeVector(embedding),
      });
      // Into WebAssembly memory through the Arrow IPC format.
      const wasm = WasmTable.fromIPCStream(tableToIPC(table, "stream"));
      for (const b of wasm.recordBatches()) controller.enqueue(b);
    },
  });

  const properties = new WriterPropertiesBuilder()
    .setCompression(Compression.SNAPPY)
    .setCreatedBy("embed-multi")
    // The writer holds a row group until it is full: one per chunk read back.
    .setMaxRowGroupSize(ROWS_PER_CHUNK)
    .build();
  await writeThenCommitAsync(path, async (fd) => {
    const bytes = await transformParquetStream(batches, properties);
    const readerOfBytes = bytes.getReader();
    for (;;) {
      const { done, value } = await readerOfBytes.read();
      if (done) break;
      writeAll(fd, value as Uint8Array);
    }
  });
}

/** The chunk's values as the typed array Arrow wants for the dtype (a copy: the chunk is reused). */
function valuesData(encoder: Encoder, bytes: Uint8Array): Data<Float32 | Float16 | Int8 | Uint8> {
  const copy = bytes.slice();
  const length = encoder.width * (copy.length / encoder.rowBytes);
  switch (encoder.dtype) {
    case "float32":
      return makeData({
        type: new Float32(),
        length,
        nullCount: 0,
        data: new Float32Array(copy.buffer),
      });
    case "float16":
      return makeData({
        type: new Float16(),
        length,
        nullCount: 0,
        data: new Uint16Array(copy.buffer),
      });
    case "int8":
    case "binary":
      return makeData({ type: new Int8(), length, nullCount: 0, data: new Int8Array(copy.buffer) });
    case "uint8":
    case "ubinary":
      return makeData({ type: new Uint8(), length, nullCount: 0, data: copy });
  }
}
