/*
 * CaffeineReplay.java - the peer a Java user would pick, on bench_edge's own traces: Debian's
 * libcaffeine-java (W-TinyLFU) replays a trace file written by bench_edge (key ids, 32-bit
 * little-endian) once per capacity given, a read and a fill on each miss, and prints
 * "<capacity> <misses>" per capacity. Maintenance runs on the calling thread
 * (executor(Runnable::run)), so the replay is deterministic and no eviction lags behind.
 *
 * Usage: java -cp caffeine.jar:DIR CaffeineReplay TRACE CAPACITY...
 */
import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Paths;

public final class CaffeineReplay {
    public static void main(String[] args) throws Exception {
        int[] trace;
        try (FileChannel ch = FileChannel.open(Paths.get(args[0]))) {
            MappedByteBuffer b = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
            b.order(ByteOrder.LITTLE_ENDIAN);
            trace = new int[(int) (ch.size() / 4)];
            b.asIntBuffer().get(trace);
        }
        for (int i = 1; i < args.length; i++) {
            long cap = Long.parseLong(args[i]);
            Cache<Integer, Boolean> c =
                Caffeine.newBuilder().maximumSize(cap).executor(Runnable::run).build();
            long misses = 0;
            for (int k : trace) {
                Integer key = k;
                if (c.getIfPresent(key) == null) {
                    misses++;
                    c.put(key, Boolean.TRUE);
                }
            }
            System.out.println(cap + " " + misses);
        }
    }
}
