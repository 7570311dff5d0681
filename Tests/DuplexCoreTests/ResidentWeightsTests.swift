import DuplexCore
import XCTest

/// WeightStore.residentCopies: weights copied out of the map (f32 into huge-page memory) and the
/// file's pages dropped give the same values, and the file stays readable afterwards.
final class ResidentWeightsTests: XCTestCase {
    func testCopiesMatchTheMapAndReleasedPagesStayReadable() throws {
        let big = Tensor(shape: [1024, 700], data: randomArray(1024 * 700, seed: 1))  // > 2 MiB: huge-page path
        let small = Tensor(shape: [3, 5, 1], data: randomArray(15, seed: 2))
        let half = Tensor(shape: [4, 6], data: randomArray(24, seed: 3))
        var w = SafetensorsWriter()
        w.add("big", big)
        w.add("small", small)
        w.add("half", half, as: .f16)
        w.add("vector", Tensor(shape: [7], data: randomArray(7, seed: 4)))
        let path = temporaryPath("resident.safetensors")
        try w.write(to: path)

        let mapped = try WeightStore(path: path)
        let resident = try WeightStore(path: path)
        resident.residentCopies = true
        for store in [mapped, resident] {
            XCTAssertEqual(store.matrix("big", shape: [1024, 700]).toTensor().data, big.data)
            XCTAssertEqual(store.matrix("small", shape: [3, 5, 1]).toTensor().data, small.data)
            let h = store.matrix("half", shape: [4, 6]).toTensor().data
            XCTAssertEqual(h, try mapped.files[0].floatTensor("half").data)
            XCTAssertEqual(store.tensor("vector", shape: [7]).data.count, 7)
            try store.finish()
        }
        // The resident store released the file's pages; reading them again faults them back in.
        XCTAssertEqual(try resident.files[0].floatTensor("big").data, big.data)
    }
}
